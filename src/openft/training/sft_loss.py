"""Supervised loss computed only where there is something to learn.

TRL's SFTTrainer projects every position of a batch onto the vocabulary (in chunks, to bound memory) and
also computes each position's entropy, then throws away the prompt positions. On short chat examples
most of that is waste: the LM head and the softmax over ~50k words are a large share of a small model's
step. `TrainedPositionsSFTTrainer` asks the model for logits only at positions whose next token carries a
label (transformers' `logits_to_keep` mask), takes the cross-entropy there, and logs the same metrics
openft reports (loss, mean token accuracy, tokens seen). The loss is the same number TRL computes:
summed over labelled tokens and divided by the labelled tokens of the whole accumulated batch. On the CPU
the cross-entropy and the accuracy's argmax come from the head's bf16 logits in a few native passes
(native_cross_entropy.py) instead of PyTorch's many over an fp32 copy.

Cases this does not cover (custom loss functions, label smoothing, DFT loss, MoE auxiliary loss, or a
batch whose logits would be too large to hold at once) go to TRL's own `compute_loss` unchanged.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from openft.models.chat_template import IGNORE_INDEX
from openft.training.native_cross_entropy import cross_entropy_and_predictions

# Above this many logits (fp32: 4 bytes each) TRL's chunked head is used, so memory stays bounded.
MAX_LOGIT_ELEMENTS = 2**28


class TrainedPositionsSFTTrainer(SFTTrainer):
    def _uses_plain_nll(self) -> bool:
        return (
            self.compute_loss_func is None
            and self.label_smoother is None
            and self.args.loss_type == "nll"
            and not self.aux_loss_enabled
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        if return_outputs or labels is None or not self._uses_plain_nll():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Position t predicts token t+1, so t is kept when label t+1 is trained.
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        kept = int(keep.sum())
        # DDP/FSDP wrap the model; the head's size is on the model inside
        vocab_size = self.accelerator.unwrap_model(model).get_output_embeddings().weight.shape[0]
        if kept * vocab_size > MAX_LOGIT_ELEMENTS:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        outputs = model(**model_inputs, use_cache=False, logits_to_keep=keep)
        logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])
        targets = labels[:, 1:][keep[:, :-1]]
        loss_sum, predictions = cross_entropy_and_predictions(logits, targets, spend_logits=True)
        denominator = num_items_in_batch if num_items_in_batch is not None else kept
        loss = loss_sum / torch.as_tensor(denominator, device=loss_sum.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._log_batch_metrics(inputs, predictions, targets)
        return loss

    def _log_batch_metrics(self, inputs, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """The metrics TRL logs for a batch, from the kept positions only (entropy is not reported by openft)."""
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        correct = gather((predictions == targets).sum()).sum()
        valid = gather(torch.tensor(targets.numel(), device=predictions.device)).sum()
        self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                local_tokens = inputs["attention_mask"].sum()
            else:  # padding-free: one row holding every token of the batch
                local_tokens = torch.tensor(inputs["input_ids"].numel(), device=predictions.device)
            self._total_train_tokens += gather(local_tokens).sum().item() // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
