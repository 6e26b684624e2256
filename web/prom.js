// Prometheus text exposition, read in the page: samples, counter rates and
// histogram quantiles (the way PromQL's histogram_quantile interpolates).

// Parses exposition text into a Map: series name -> [{labels, value}].
// Comments, timestamps and exemplars are skipped.
export function parseProm(text) {
  const out = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*?)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3])) !== null) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    const v = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : parseFloat(m[4]);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: v });
  }
  return out;
}

// The sum of a series' samples whose labels include match (NaN: absent).
export function value(samples, name, match = {}) {
  const s = samples.get(name);
  if (!s) return NaN;
  let sum = 0, found = false;
  for (const x of s) {
    if (Object.entries(match).every(([k, v]) => x.labels[k] === v)) {
      sum += x.value;
      found = true;
    }
  }
  return found ? sum : NaN;
}

// The labels of a series' first sample ({} when absent).
export function labels(samples, name) {
  const s = samples.get(name);
  return s && s.length ? s[0].labels : {};
}

// A histogram's cumulative buckets [{le, count}] sorted by le, summed over
// other labels.
export function buckets(samples, name) {
  const by = new Map();
  for (const x of samples.get(name + '_bucket') || []) {
    const le = x.labels.le === '+Inf' ? Infinity : parseFloat(x.labels.le);
    by.set(le, (by.get(le) || 0) + x.value);
  }
  return [...by.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
}

// Buckets now minus buckets then (the observations in between).
export function bucketDelta(now, then) {
  if (!then) return now;
  const old = new Map(then.map((b) => [b.le, b.count]));
  return now.map((b) => ({ le: b.le, count: b.count - (old.get(b.le) || 0) }));
}

// The q-quantile of cumulative buckets, interpolated linearly inside the
// bucket it falls in; NaN with no observations. A quantile in the +Inf
// bucket is the highest finite bound.
export function quantile(q, bs) {
  if (!bs.length) return NaN;
  const total = bs[bs.length - 1].count;
  if (!(total > 0)) return NaN;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const b of bs) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe;
      if (b.count === prevCount) return b.le;
      return prevLe + (b.le - prevLe) * (rank - prevCount) / (b.count - prevCount);
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}
