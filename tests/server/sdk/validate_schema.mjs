// Validates documents against JSON Schemas with ajv (an implementation
// independent of herd's schema compiler). stdin: [{"schema": S, "docs": [text, ...]}, ...];
// stdout: [[{"valid": bool, "error": "..."}, ...], ...] in the same order.
// A document that is not JSON is invalid with the parse error.
import Ajv from "ajv";

const input = JSON.parse(await new Promise((resolve) => {
  let s = "";
  process.stdin.on("data", (d) => (s += d));
  process.stdin.on("end", () => resolve(s));
}));
// formats herd enforces are checked by the caller; ajv only needs to know them
const ajv = new Ajv({ allErrors: false, strict: false, validateFormats: false });
const out = input.map(({ schema, docs }) => {
  const validate = ajv.compile(schema);
  return docs.map((text) => {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      return { valid: false, error: "not JSON: " + e.message };
    }
    const valid = validate(doc);
    return { valid, error: valid ? "" : ajv.errorsText(validate.errors) };
  });
});
process.stdout.write(JSON.stringify(out));
