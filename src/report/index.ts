export { collectReport, median, type ImageReport, type DerivationTiming } from "./collect.js";
export { renderHtml, renderText } from "./render.js";
