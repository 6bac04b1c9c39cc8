// Kefu support pages: progressive enhancement, no build step.
//
// Without this module every page works as plain HTML (forms post and the
// server answers with a page).  With it: errors shown next to the field as
// you go (the same elements the server fills, announced through
// aria-live), related knowledge-base articles while the subject is typed,
// a guard against double submission, and, inside the embed iframe, the
// page height sent to the embedding page.  All text comes from the page
// (data-* attributes rendered from the language catalogue); nothing here
// is a string a person reads.

const EMAIL = /^[^\s@<>,;"\\]+@[^\s@<>,;"\\.][^\s@<>,;"\\]*$/;

function errorElement(field) {
  return document.getElementById(field.id + '-error');
}

function showError(field, message) {
  const el = errorElement(field);
  if (el) el.textContent = message;
  const box = field.closest('.field');
  if (message) {
    field.setAttribute('aria-invalid', 'true');
    if (box) box.classList.add('has-error');
  } else {
    field.removeAttribute('aria-invalid');
    if (box) box.classList.remove('has-error');
  }
}

// The first problem with one field, or '' (what the server checks, minus what only it can).
function problem(form, field) {
  const d = form.dataset;
  if (field.type === 'file') {
    const files = Array.from(field.files || []);
    const maxFiles = Number(d.maxFiles || 0);
    const maxBytes = Number(d.maxBytes || 0);
    if (maxFiles && files.length > maxFiles) return d.errFilesCount || '';
    if (maxBytes && files.some((f) => f.size > maxBytes)) return d.errFileSize || '';
    return '';
  }
  const value = field.value.trim();
  if (field.required && value === '') return d.errRequired || '';
  if (field.type === 'email' && value !== '' && !EMAIL.test(value)) return d.errEmail || '';
  return '';
}

function fieldsOf(form) {
  return Array.from(form.querySelectorAll('input, select, textarea')).filter(
    (f) => f.id && errorElement(f) && f.type !== 'hidden');
}

function enhance(form) {
  form.noValidate = true; // our messages, in the page's language, instead of the browser's
  const fields = fieldsOf(form);
  for (const f of fields) {
    const check = () => { if (f.getAttribute('aria-invalid') === 'true') showError(f, problem(form, f)); };
    f.addEventListener('input', check);
    f.addEventListener('change', () => showError(f, problem(form, f)));
    f.addEventListener('blur', () => { if (f.value !== '') showError(f, problem(form, f)); });
  }
  form.addEventListener('submit', (ev) => {
    let first = null;
    for (const f of fields) {
      const msg = problem(form, f);
      showError(f, msg);
      if (msg && !first) first = f;
    }
    // A reply needs text or a file.
    if ('reply' in form.dataset) {
      const text = form.querySelector('textarea');
      const files = form.querySelector('input[type="file"]');
      if (text && text.value.trim() === '' && !(files && files.files && files.files.length)) {
        showError(text, form.dataset.errRequired || '');
        first = first || text;
      }
    }
    if (first) {
      ev.preventDefault();
      first.focus();
      return;
    }
    if (form.dataset.busy) { // a second click while the first submission is on its way
      ev.preventDefault();
      return;
    }
    form.dataset.busy = '1';
    const button = form.querySelector('button[type="submit"]');
    if (button && form.dataset.sending) {
      button.disabled = true;
      button.textContent = form.dataset.sending;
    }
  });
}

// Knowledge-base suggestions while the subject is typed (an empty list until the KB exists).
function suggest(input) {
  const box = document.getElementById('f-kb');
  if (!box) return;
  const list = box.querySelector('ul');
  let timer = 0;
  let seq = 0;
  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = input.value.trim();
      const mine = ++seq;
      if (q.length < 3) { box.hidden = true; return; }
      try {
        const url = input.dataset.kbUrl + '?q=' + encodeURIComponent(q) +
          '&lang=' + encodeURIComponent(document.documentElement.lang);
        const res = await fetch(url, { headers: { Accept: 'application/json' } });
        if (!res.ok || mine !== seq) return;
        const data = await res.json();
        const items = Array.isArray(data.items) ? data.items : [];
        list.replaceChildren(...items.slice(0, 5).map((it) => {
          const li = document.createElement('li');
          const a = document.createElement('a');
          a.href = String(it.url || '#');
          a.textContent = String(it.title || '');
          a.target = '_blank';
          a.rel = 'noopener';
          li.append(a);
          return li;
        }));
        box.hidden = items.length === 0;
      } catch (e) {
        box.hidden = true; // suggestions are a help, never in the way
      }
    }, 300);
  });
}

// Inside the embed: tell the embedding page how tall we are.
function reportHeight() {
  if (!document.body.classList.contains('embed') || window.parent === window) return;
  // The body's own height: the document's would never shrink below the frame's.
  const send = () => window.parent.postMessage(
    { type: 'kefu:height', height: Math.ceil(document.body.getBoundingClientRect().height) }, '*');
  new ResizeObserver(send).observe(document.body);
  send();
}

for (const form of document.querySelectorAll('form[data-validate]')) enhance(form);
const subject = document.querySelector('input[data-kb-url]');
if (subject) suggest(subject);
// After a failed submission the server's error summary takes the focus.
const summary = document.getElementById('error-summary');
if (summary) summary.focus();
reportHeight();
