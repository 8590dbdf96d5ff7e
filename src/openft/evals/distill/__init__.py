"""Distillation: a teacher model answers a file of prompts, weak answers are filtered out, and the rest become a
validated training file for a smaller student (docs/distillation.md).

prompts.py reads and checks the prompt file; requests.py checks a request; objects.py stores and lists jobs;
teacher.py calls the teacher (retries, backoff, bounded concurrency); cache.py keeps every paid answer;
filters.py drops weak answers; output.py writes the training file and the report; runner.py is the queue kind's
runner.
"""
