/** `ukb report` output: a text table, JSON, or a self-contained HTML page with a build timeline. */
import { median, type ImageReport } from "./collect.js";

const mb = (n: number | undefined) => (n === undefined ? "-" : n < 100_000 ? `${(n / 1e3).toFixed(1)} kB` : `${(n / 1e6).toFixed(2)} MB`);
const sec = (ms: number | undefined) => (ms === undefined ? "-" : `${(ms / 1000).toFixed(2)} s`);

function rows(reports: readonly ImageReport[]): string[][] {
  return [
    ["", ...reports.map((r) => `${r.attr === "default" ? "" : `${r.attr} of `}${r.recipe}`)],
    ["type", ...reports.map((r) => r.unikernelType)],
    ["kernel", ...reports.map((r) => mb(r.kernelBytes))],
    ["initrd", ...reports.map((r) => mb(r.initrdBytes))],
    ["image (layout)", ...reports.map((r) => mb(r.imageBytes))],
    ["derivations", ...reports.map((r) => String(r.derivations.length))],
    ["build time, sum", ...reports.map((r) => sec(r.totalBuildMs))],
    ["critical path", ...reports.map((r) => sec(r.criticalPathMs))],
    ["boot to first 200 (median)", ...reports.map((r) => (r.bootMs ? `${sec(median(r.bootMs))} (${r.bootMs.length} boots)` : "-"))],
  ];
}

export function renderText(reports: readonly ImageReport[]): string {
  const table = rows(reports);
  const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  const lines = table.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ").trimEnd());
  for (const r of reports) {
    lines.push("", `${r.recipe}: slowest derivations (* on the critical path)`);
    for (const d of [...r.derivations].filter((d) => d.buildMs !== undefined).sort((a, b) => b.buildMs! - a.buildMs!).slice(0, 8)) {
      lines.push(`  ${d.critical ? "*" : " "} ${sec(d.buildMs).padStart(9)}  ${d.name}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

function timeline(r: ImageReport): string {
  const built = r.derivations.filter((d) => d.buildMs !== undefined && d.finishedAt !== undefined);
  if (built.length === 0) return "<p>No build times recorded (everything was substituted or added).</p>";
  const starts = built.map((d) => d.finishedAt! - d.buildMs!);
  const t0 = Math.min(...starts);
  const t1 = Math.max(...built.map((d) => d.finishedAt!));
  const span = Math.max(1, t1 - t0);
  const rowH = 18;
  const width = 900;
  const label = 220;
  const bars = built
    .map((d, i) => ({ d, start: starts[i]! }))
    .sort((a, b) => a.start - b.start)
    .map(({ d, start }, i) => {
      const x = label + ((start - t0) / span) * (width - label - 10);
      const w = Math.max(2, (d.buildMs! / span) * (width - label - 10));
      const y = i * rowH;
      return `<g><title>${escapeHtml(d.name)}: ${sec(d.buildMs)}${d.critical ? " (critical path)" : ""}</title>
<text x="${label - 6}" y="${y + 13}" text-anchor="end">${escapeHtml(d.name)}</text>
<rect x="${x.toFixed(1)}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" class="${d.critical ? "critical" : "bar"}"/></g>`;
    })
    .join("\n");
  return `<svg class="timeline" viewBox="0 0 ${width} ${built.length * rowH + 4}" width="${width}" height="${built.length * rowH + 4}" role="img" aria-label="build timeline of ${escapeHtml(r.recipe)}">${bars}</svg>`;
}

export function renderHtml(reports: readonly ImageReport[]): string {
  const table = rows(reports);
  const head = table[0]!.map((c) => `<th>${escapeHtml(c)}</th>`).join("");
  const body = table
    .slice(1)
    .map((r) => `<tr>${r.map((c, i) => (i === 0 ? `<th scope="row">${escapeHtml(c)}</th>` : `<td>${escapeHtml(c)}</td>`)).join("")}</tr>`)
    .join("\n");
  const sections = reports
    .map((r) => `<section><h2>${escapeHtml(r.recipe)}${r.attr === "default" ? "" : ` (-A ${escapeHtml(r.attr)})`}</h2>
<p>${r.derivations.length} derivations; build time ${sec(r.totalBuildMs)} in all, ${sec(r.criticalPathMs)} on the critical path (<span class="key critical"></span> marked).</p>
${timeline(r)}</section>`)
    .join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ukb report</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #1b1b1b; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th[scope=row] { text-align: left; font-weight: normal; color: #555; }
.timeline text { font-size: 11px; fill: #333; }
.bar { fill: #7aa6d8; } .critical { fill: #d9534f; }
.key { display: inline-block; width: 12px; height: 10px; } .key.critical { background: #d9534f; }
</style></head>
<body>
<h1>ukb report</h1>
<table id="comparison"><thead><tr>${head}</tr></thead><tbody>
${body}
</tbody></table>
${sections}
<script>
  // Marks a page that rendered and ran without error (checked by the tests in a real browser).
  document.body.dataset.rendered = String(document.querySelectorAll("svg.timeline, section p").length > 0);
</script>
</body></html>
`;
}
