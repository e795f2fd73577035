// sharp with its documented defaults (WebP q80, AVIF q50, JPEG q80), as a peer for bench/quality.py.
// argv: input path, longest side (px), output folder. stdout: JSON {format: {path, bytes, cpu_s}}.
import sharp from "sharp";
import { join } from "node:path";

const [input, longSide, outDir] = process.argv.slice(2);
const side = Number(longSide);
sharp.concurrency(1); // one thread, as uplodr's worker is measured: CPU-seconds compare fairly
const answer = {};
for (const [name, ext] of [["webp", "webp"], ["avif", "avif"], ["jpeg", "jpg"]]) {
  const before = process.cpuUsage();
  const path = join(outDir, `sharp.${ext}`);
  const info = await sharp(input)
    .rotate()
    .resize({ width: side, height: side, fit: "inside", withoutEnlargement: true })
    .toColourspace("srgb")
    [name]()
    .toFile(path);
  const used = process.cpuUsage(before);
  answer[name] = { path, bytes: info.size, width: info.width, height: info.height, cpu_s: (used.user + used.system) / 1e6 };
}
process.stdout.write(JSON.stringify(answer));
