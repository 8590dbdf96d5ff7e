"""The HTML report's page template (string.Template: $name placeholders). Self-contained: inline CSS, inline
SVG charts, no scripts and no external resources, so it opens offline and can be attached to an e-mail."""

HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
         color: #1d1d1f; padding: 0 16px; }
  h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
  table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
  th, td { border: 1px solid #d0d0d5; padding: 4px 8px; text-align: left; vertical-align: top; }
  th { background: #f2f2f5; }
  table.flips td { max-width: 320px; white-space: pre-wrap; word-break: break-word; }
  table.samples td { max-width: 260px; white-space: pre-wrap; word-break: break-word; }
  .headline { font-weight: 600; font-size: 15px; }
  .recommendation { background: #f6f8ff; border-left: 4px solid #4269d0; padding: 4px 16px; margin: 12px 0; }
  .charts { display: flex; flex-wrap: wrap; gap: 12px; }
  figure.chart { margin: 0; border: 1px solid #e3e3e8; border-radius: 6px; padding: 4px; }
  svg.plot text { font-size: 11px; fill: #333; }
  svg.plot text.title { font-size: 13px; font-weight: 600; }
  svg.plot .axis { stroke: #333; } svg.plot .grid { stroke: #e6e6ea; }
  svg.plot .ci { stroke-width: 2; }
</style>
</head>
<body>
<h1>$title</h1>
<p>$summary</p>
$recommendation
<h2>Strategies (best first)</h2>
$strategies
<h2>Plots</h2>
<div class="charts">$plots</div>
$costs
$comparisons
<h2>Sample predictions</h2>
$samples
</body>
</html>
"""
