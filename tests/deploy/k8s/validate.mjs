// Validates every object in the rendered overlays (YAML files kustomize
// wrote) against its schema: Kubernetes (kubernetes-models), KEDA
// (@kubernetes-models/keda) and prometheus-operator
// (@kubernetes-models/prometheus-operator). An object whose apiVersion and
// kind have no schema here fails too: nothing goes unchecked.
// Also checks that the PrometheusRule's groups are exactly those of
// deploy/prometheus/herd-alerts.yml (generated, not copied).
// Usage: node validate.mjs RULES.yml RENDERED.yaml...
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { parseAllDocuments, parse } from "yaml";

// apiVersion -> the module exporting its kinds
function modulePath(apiVersion) {
  if (apiVersion === "keda.sh/v1alpha1") return "@kubernetes-models/keda/keda.sh/v1alpha1";
  if (apiVersion === "monitoring.coreos.com/v1") return "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
  return `kubernetes-models/${apiVersion}`;
}

const [rulesFile, ...files] = process.argv.slice(2);
if (!rulesFile || files.length === 0) {
  console.error("usage: node validate.mjs RULES.yml RENDERED.yaml...");
  process.exit(2);
}
// PromQL ignores white space, and kustomize re-encodes a folded (>) block
// with a more-indented line as a literal one with an extra blank line:
// compare expressions with white space collapsed, everything else exactly.
const normalized = (groups) =>
  (groups || []).map((g) => ({
    ...g,
    rules: (g.rules || []).map((r) => ({ ...r, expr: String(r.expr).replace(/\s+/g, " ").trim() })),
  }));
const rules = parse(readFileSync(rulesFile, "utf8"));
let failures = 0, checked = 0;
const fail = (where, msg) => {
  failures++;
  console.error(`FAIL ${where}: ${msg}`);
};

for (const file of files) {
  const overlay = basename(file, ".yaml");
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      fail(overlay, `YAML: ${doc.errors[0].message}`);
      continue;
    }
    const obj = doc.toJS();
    if (!obj) continue;
    const where = `${overlay}: ${obj.kind}/${obj.metadata?.name}`;
    let Model;
    try {
      const mod = await import(modulePath(obj.apiVersion));
      Model = mod[obj.kind];
      if (!Model) throw new Error(`${obj.apiVersion} has no kind ${obj.kind}`);
    } catch (e) {
      fail(where, `no schema for ${obj.apiVersion} ${obj.kind} (${e.code || e.message})`);
      continue;
    }
    try {
      new Model(obj).validate();
      checked++;
    } catch (e) {
      fail(where, e.message + (e.errors ? "\n  " + JSON.stringify(e.errors, null, 1).slice(0, 2000) : ""));
    }
    if (obj.kind === "PrometheusRule" && !isDeepStrictEqual(normalized(obj.spec?.groups), normalized(rules.groups)))
      fail(where, `spec.groups differ from ${rulesFile}: run deploy/prometheus/gen-prometheusrule.sh`);
  }
}
if (failures) {
  console.error(`${failures} failure(s)`);
  process.exit(1);
}
console.log(`ok: ${checked} objects in ${files.length} overlays valid against their schemas`);
