// A small Markdown renderer for model output that builds DOM nodes only
// (createElement, textContent): nothing the model writes is ever parsed as
// HTML, so "<script>" or "<img onerror=...>" in an answer shows as text.
// It knows what chat answers use: fenced code blocks (with a copy button),
// headings, lists, quotes, rules, paragraphs; inline code, bold, italics and
// links (http, https and mailto only). An unclosed fence (an answer still
// streaming) runs to the end.

const LINK_SCHEMES = /^(https?:|mailto:)/i;

// Renders text into a new DocumentFragment.
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
  let i = 0;
  let para = [];
  const flushPara = () => {
    if (para.length) {
      const p = el('p');
      inline(para.join('\n'), p);
      frag.appendChild(p);
      para = [];
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*(```+|~~~+)\s*([\w+.#-]*)\s*$/.exec(line);
    if (fence) {
      flushPara();
      const code = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence[1]); i++) code.push(lines[i]);
      i++; // the closing fence (or past the end)
      frag.appendChild(codeBlock(code.join('\n'), fence[2]));
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      flushPara();
      const h = el('h' + Math.min(6, heading[1].length + 2)); // h3..h6: inside a message
      inline(heading[2], h);
      frag.appendChild(h);
      i++;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flushPara();
      frag.appendChild(el('hr'));
      i++;
      continue;
    }
    const item = /^\s*([-*+]|\d{1,9}[.)])\s+/;
    if (item.test(line)) {
      flushPara();
      const ordered = /\d/.test(item.exec(line)[1]);
      const list = el(ordered ? 'ol' : 'ul');
      if (ordered) {
        const start = parseInt(item.exec(line)[1], 10);
        if (start !== 1) list.start = start;
      }
      while (i < lines.length && item.test(lines[i]) && /\d/.test(item.exec(lines[i])[1]) === ordered) {
        const li = el('li');
        inline(lines[i].replace(item, ''), li);
        list.appendChild(li);
        i++;
      }
      frag.appendChild(list);
      continue;
    }
    if (/^\s*>/.test(line)) {
      flushPara();
      const quote = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) quote.push(lines[i++].replace(/^\s*>\s?/, ''));
      const bq = el('blockquote');
      bq.appendChild(renderMarkdown(quote.join('\n')));
      frag.appendChild(bq);
      continue;
    }
    if (line.trim() === '') {
      flushPara();
      i++;
      continue;
    }
    para.push(line);
    i++;
  }
  flushPara();
  return frag;
}

// Replaces node's children with text rendered.
export function renderInto(node, text) {
  node.replaceChildren(renderMarkdown(text));
}

function el(tag, text) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  return e;
}

function codeBlock(code, lang) {
  const wrap = el('div');
  wrap.className = 'codeblock';
  const pre = el('pre');
  const c = el('code', code);
  if (lang) c.dataset.lang = lang;
  pre.appendChild(c);
  const copy = el('button', 'Copy');
  copy.type = 'button';
  copy.className = 'copy';
  copy.addEventListener('click', () => copyText(code, copy));
  wrap.append(pre, copy);
  return wrap;
}

async function copyText(text, button) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
    } else {
      // plain http on another host is not a secure context: the old way
      const ta = el('textarea');
      ta.value = text;
      ta.style.position = 'fixed';
      ta.style.opacity = '0';
      document.body.appendChild(ta);
      ta.select();
      document.execCommand('copy');
      ta.remove();
    }
    button.textContent = 'Copied';
  } catch (e) {
    button.textContent = 'Copy failed';
  }
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}

// Inline spans: `code`, **bold** / __bold__, *italic* / _italic_, [text](url).
// Underscores count only at word edges (snake_case and __dunder__ names in
// prose stay as written).
const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?!\s)([\s\S]+?)\*\*|(?<!\w)__(?!\s)([\s\S]+?)__(?!\w)|\*(?![\s*])([^*]+?)\*|(?<!\w)_(?![\s_])([^_]+?)_(?!\w)|\[([^\]\n]+)\]\(([^)\s]+)\)/g;

function inline(text, parent) {
  let last = 0;
  const re = new RegExp(INLINE.source, 'g'); // recursion must not share lastIndex
  let m;
  while ((m = re.exec(text)) !== null) {
    if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
    if (m[1] !== undefined) {
      parent.appendChild(el('code', m[2].trim() === '' ? m[2] : m[2].replace(/^ (.*) $/, '$1')));
    } else if (m[3] !== undefined || m[4] !== undefined) {
      const b = el('strong');
      inline(m[3] !== undefined ? m[3] : m[4], b);
      parent.appendChild(b);
    } else if (m[5] !== undefined || m[6] !== undefined) {
      const it = el('em');
      inline(m[5] !== undefined ? m[5] : m[6], it);
      parent.appendChild(it);
    } else {
      const url = m[8];
      if (LINK_SCHEMES.test(url)) {
        const a = el('a');
        a.href = url;
        a.rel = 'noopener noreferrer nofollow';
        a.target = '_blank';
        inline(m[7], a);
        parent.appendChild(a);
      } else {
        parent.appendChild(document.createTextNode(m[0])); // javascript: and the like stay text
      }
    }
    last = re.lastIndex;
  }
  if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
}
