// The support form and the customer portal in a real browser (Debian's
// Chromium through playwright-core): a person writes in with an attachment,
// sees the confirmation, opens the portal link, replies, the agent API sees
// the reply, the person marks it solved; the same in Simplified Chinese; the
// inline error for a missing e-mail address; JavaScript off; keyboard only;
// a 375 px phone; the form embedded in another site; "My requests" through
// a sign-in link.  Screenshots go to KEFU_E2E_ARTIFACTS.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { World, pngBytes, pngSize } from './lib/harness.mjs';

let w;
let shop; // another site that embeds the form
let shopOrigin;
const BASE_URL = 'http://support.e2e.test'; // what links in mail start with

before(async () => {
  shop = http.createServer((req, res) => {
    const kefu = new URL(req.url, 'http://x').searchParams.get('kefu');
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title></head>
<body><h1>Example shop</h1><p>Questions? Write to us:</p>
<script src="${kefu}/support/embed.js" data-lang="en" data-title="Support form"></script>
</body></html>`);
  });
  await new Promise((resolve) => shop.listen(0, '127.0.0.1', resolve));
  // "localhost" is another site than 127.0.0.1 for the browser: a real cross-site embed.
  shopOrigin = `http://localhost:${shop.address().port}`;
  w = await World.create({
    KEFU_PUBLIC_BASE_URL: BASE_URL,
    KEFU_WEBFORM_FRAME_ANCESTORS: `'self' ${shopOrigin}`,
  });
});

after(async () => {
  if (shop) shop.close();
  if (w) await w.close();
});

function uniqueEmail(tag) {
  return `${tag.toLowerCase()}-${randomBytes(3).toString('hex')}@example.org`;
}

function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  return errors;
}

function ticketCount() {
  return Number(w.query('SELECT COUNT(*) FROM ticket')[0][0]);
}

async function ackFor(tid) {
  const rows = w.query(`SELECT channel, target, JSON_UNQUOTE(JSON_EXTRACT(payload, '$.portal_url')) ` +
    `FROM outbox WHERE ticket_id = ${tid} AND kind = 'ack'`);
  assert.equal(rows.length, 1, `one acknowledgement for ticket ${tid}`);
  return { channel: rows[0][0], target: rows[0][1], portalUrl: rows[0][2] };
}

/** The whole journey in one language; labels are how a person (and a screen reader) finds fields. */
async function journey(lang, L) {
  const ctx = await w.context({ locale: lang });
  const page = await ctx.newPage();
  const errors = watchErrors(page);
  const email = uniqueEmail(`journey-${lang}`);

  await page.goto(`${w.base}/support/new`);
  assert.equal(await page.getAttribute('html', 'lang'), lang);
  await page.getByLabel(L.name).fill(L.person);
  await page.getByLabel(L.email).fill(email);
  await page.getByLabel(L.topic).selectOption('billing');
  await page.getByLabel(L.subject).fill(L.subjectText);
  await page.getByLabel(L.description).fill(L.descriptionText);
  await page.getByLabel(L.attachments).setInputFiles(
    [{ name: 'invoice.png', mimeType: 'image/png', buffer: pngBytes() }]);
  await w.shot(page, `form-${lang}.png`, { fullPage: true });

  await Promise.all([page.waitForURL(/\/submitted$/), page.getByRole('button', { name: L.send }).click()]);
  const number = (await page.locator('#ticket-number').textContent()).trim();
  assert.match(number, /^KF-\d{6}$/);
  await w.shot(page, `confirmation-${lang}.png`, { fullPage: true });
  const tid = Number(number.slice(3));

  // The acknowledgement waits in the outbox for the e-mail channel, with the portal link.
  const portalPath = await page.locator('#portal-link').getAttribute('href');
  const ack = await ackFor(tid);
  assert.equal(ack.channel, 'email');
  assert.equal(ack.target, email);
  assert.equal(ack.portalUrl, BASE_URL + portalPath);

  // The portal: the request, the attachment, the agent's answer.
  await Promise.all([page.waitForURL(w.base + portalPath), page.locator('#portal-link').click()]);
  assert.equal((await page.locator('#ticket-subject').textContent()).trim(), L.subjectText);
  await page.getByRole('link', { name: 'invoice.png' }).waitFor();
  const r = await w.api('POST', `/api/v1/tickets/${tid}/replies`, { text: L.agentText });
  assert.equal(r.status, 201, r.text);
  const note = await w.api('POST', `/api/v1/tickets/${tid}/notes`, { text: 'INTERNAL NOTE 31337' });
  assert.equal(note.status, 201, note.text);
  await page.reload();
  await page.getByText(L.agentText).waitFor();
  assert.equal(await page.getByText('INTERNAL NOTE 31337').count(), 0, 'internal notes stay internal');

  // The customer replies, with a file; the agent API sees it.
  await page.getByLabel(L.message).fill(L.replyText);
  await page.locator('#f-attachments').setInputFiles( // "Attachments" also names the file lists
    [{ name: 'receipt.txt', mimeType: 'text/plain', buffer: Buffer.from('paid\n') }]);
  await Promise.all([page.waitForURL(/[?&]sent=1/), page.getByRole('button', { name: L.sendReply }).click()]);
  await page.locator('#flash').waitFor();
  await page.getByText(L.replyText).waitFor();
  await w.shot(page, `portal-${lang}.png`, { fullPage: true });
  const t = await w.api('GET', `/api/v1/tickets/${tid}`);
  assert.equal(t.status, 200, t.text);
  const mine = t.json.messages.filter((m) => m.direction === 'in' && m.channel === 'web');
  assert.equal(mine.length, 2, JSON.stringify(t.json.messages));
  assert.equal(mine[1].text, L.replyText);
  assert.deepEqual(mine[1].attachments.map((a) => a.filename), ['receipt.txt']);

  // "This is solved".
  await Promise.all([page.waitForURL(/[?&]solved=1/), page.getByRole('button', { name: L.solved }).click()]);
  assert.equal((await page.locator('#ticket-status').textContent()).trim(), L.solvedStatus);
  await w.shot(page, `portal-solved-${lang}.png`, { fullPage: true });
  assert.equal((await w.api('GET', `/api/v1/tickets/${tid}`)).json.status, 'solved');

  assert.deepEqual(errors, []);
  await ctx.close();
  return { tid, email, portalPath };
}

const EN = {
  name: 'Your name', email: 'E-mail address', topic: 'Topic', subject: 'Subject',
  description: 'How can we help?', attachments: 'Attachments', send: 'Send request',
  message: 'Your message', sendReply: 'Send reply', solved: 'This is solved', solvedStatus: 'Solved',
  person: 'Ada Lovelace', subjectText: 'Invoice 42 shows the wrong total',
  descriptionText: 'The invoice says 420 instead of 42.\nCould you check it?',
  agentText: 'Sorry about that: a corrected invoice is on its way.',
  replyText: 'Thank you, the receipt is attached.',
};

const ZH = {
  name: '您的姓名', email: '电子邮箱', topic: '问题类别', subject: '主题',
  description: '我们能为您做什么？', attachments: '附件', send: '提交请求',
  message: '您的留言', sendReply: '发送回复', solved: '问题已解决', solvedStatus: '已解决',
  person: '王小明', subjectText: '发票金额不对',
  descriptionText: '发票上写的是 420 元，应该是 42 元。\n请帮忙核对。',
  agentText: '抱歉，已为您重新开具发票。',
  replyText: '谢谢，付款凭证见附件。',
};

let english; // the English journey's ticket, for "My requests"

test('form with an attachment, confirmation, portal reply seen by the agent API, solved (en)', async () => {
  english = await journey('en', EN);
});

test('the same in Simplified Chinese, chosen from Accept-Language, and the switch to English', async () => {
  await journey('zh-CN', ZH);
  const ctx = await w.context({ locale: 'zh-CN' });
  const page = await ctx.newPage();
  await page.goto(`${w.base}/support/new`);
  assert.equal(await page.locator('h1').textContent(), '联系客服');
  await Promise.all([page.waitForURL(/lang=en/), page.getByRole('link', { name: 'English' }).click()]);
  assert.equal(await page.locator('h1').textContent(), 'Contact support');
  await page.goto(`${w.base}/support/new`); // the choice is remembered
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  await ctx.close();
});

test('a missing e-mail address shows the error next to the field and sends nothing', async () => {
  const ctx = await w.context({ locale: 'en' });
  const page = await ctx.newPage();
  const errors = watchErrors(page);
  const before = ticketCount();
  await page.goto(`${w.base}/support/new`);
  await page.getByLabel('Your name').fill('No Mail');
  await page.getByLabel('Topic').selectOption('general');
  await page.getByLabel('Subject').fill('Forgot something');
  await page.getByLabel('How can we help?').fill('Oops.');
  await page.getByRole('button', { name: 'Send request' }).click();
  const err = page.locator('#f-email-error');
  await assert.doesNotReject(err.getByText('Please fill in this field.').waitFor());
  assert.equal(await page.getByLabel('E-mail address').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'f-email');
  assert.match(page.url(), /\/support\/new$/);
  await w.shot(page, 'form-error-en.png', { fullPage: true });
  // A wrong address says so; fixing it clears the message.
  await page.getByLabel('E-mail address').fill('not-an-address');
  await page.getByLabel('Subject').focus();
  await err.getByText('Enter an e-mail address such as name@example.com.').waitFor();
  await page.getByLabel('E-mail address').fill('fixed@example.org');
  await page.waitForFunction(() => document.getElementById('f-email-error').textContent === '');
  assert.equal(ticketCount(), before);
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('with JavaScript off the form still submits (plain POST and redirect)', async () => {
  const ctx = await w.context({ locale: 'en', javaScriptEnabled: false });
  const page = await ctx.newPage();
  const before = ticketCount();
  await page.goto(`${w.base}/support/new`);
  await page.getByLabel('Your name').fill('Plain HTML');
  await page.getByLabel('E-mail address').fill(uniqueEmail('nojs'));
  await page.getByLabel('Topic').selectOption('general');
  await page.getByLabel('Subject').fill('No scripts here');
  await page.getByLabel('How can we help?').fill('Sent without JavaScript.');
  await page.getByLabel('Attachments').setInputFiles(
    [{ name: 'photo.png', mimeType: 'image/png', buffer: pngBytes() }]);
  await Promise.all([page.waitForURL(/\/submitted$/), page.getByRole('button', { name: 'Send request' }).click()]);
  assert.match((await page.locator('#ticket-number').textContent()).trim(), /^KF-\d{6}$/);
  assert.equal(ticketCount(), before + 1);
  await w.shot(page, 'confirmation-nojs-en.png', { fullPage: true });
  await ctx.close();
});

test('keyboard only: every field is reached with Tab, in order, and Enter submits', async () => {
  const ctx = await w.context({ locale: 'en' });
  const page = await ctx.newPage();
  await page.goto(`${w.base}/support/new`);
  const active = () => page.evaluate(() => document.activeElement && document.activeElement.id);
  for (let i = 0; i < 12 && (await active()) !== 'f-name'; i++) await page.keyboard.press('Tab');
  assert.equal(await active(), 'f-name');
  await page.keyboard.type('Keyboard User');
  await page.keyboard.press('Tab');
  assert.equal(await active(), 'f-email');
  await page.keyboard.type(uniqueEmail('keys'));
  await page.keyboard.press('Tab');
  assert.equal(await active(), 'f-category');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Tab');
  assert.equal(await active(), 'f-subject');
  await page.keyboard.type('Typed, not clicked');
  await page.keyboard.press('Tab');
  assert.equal(await active(), 'f-description');
  await page.keyboard.type('Every step with the keyboard.');
  await page.keyboard.press('Tab');
  assert.equal(await active(), 'f-attachments');
  await page.keyboard.press('Tab'); // the honeypot is out of the tab order
  assert.equal(await page.evaluate(() => document.activeElement.type), 'submit');
  await Promise.all([page.waitForURL(/\/submitted$/), page.keyboard.press('Enter')]);
  await page.locator('#ticket-number').waitFor();
  await ctx.close();
});

test('a 375 px wide phone: one column, no sideways scrolling', async () => {
  const ctx = await w.context({ locale: 'zh-CN', viewport: { width: 375, height: 812 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true });
  const page = await ctx.newPage();
  await page.goto(`${w.base}/support/new`);
  const file = await w.shot(page, 'form-375-zh-CN.png');
  assert.deepEqual(pngSize(file), { width: 375, height: 812 });
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 375),
    'the page is wider than the phone');
  const box = await page.getByLabel('主题').boundingBox();
  assert.ok(box.x >= 0 && box.x + box.width <= 375, `subject field at ${JSON.stringify(box)}`);
  await w.shot(page, 'form-375-zh-CN-full.png', { fullPage: true });
  // The portal of the English journey, on the phone.
  await page.goto(`${w.base}${english.portalPath}?lang=en`);
  const file2 = await w.shot(page, 'portal-375-en.png');
  assert.deepEqual(pngSize(file2), { width: 375, height: 812 });
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 375));
  await ctx.close();
});

test('embedded in another site: the form works inside the iframe', async () => {
  const ctx = await w.context({ locale: 'en' });
  const page = await ctx.newPage();
  const errors = watchErrors(page);
  await page.goto(`${shopOrigin}/shop.html?kefu=${encodeURIComponent(w.base)}`);
  const frame = page.frameLocator('iframe.kefu-support-frame');
  await frame.getByLabel('Your name').fill('Shop Customer');
  await frame.getByLabel('E-mail address').fill(uniqueEmail('embed'));
  await frame.getByLabel('Topic').selectOption('general');
  await frame.getByLabel('Subject').fill('Asked from the shop');
  await frame.getByLabel('How can we help?').fill('Through the embedded form.');
  await w.shot(page, 'embed-form-en.png', { fullPage: true });
  await frame.getByRole('button', { name: 'Send request' }).click();
  await frame.locator('#ticket-number').waitFor();
  assert.match((await frame.locator('#ticket-number').textContent()).trim(), /^KF-\d{6}$/);
  await w.shot(page, 'embed-confirmation-en.png', { fullPage: true });
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('My requests: a sign-in link lists the tickets of every channel', async () => {
  assert.ok(english, 'the English journey ran first');
  const other = await w.api('POST', '/api/v1/tickets', {
    subject: 'Phoned in yesterday', text: 'by phone', customer: { email: english.email } });
  assert.equal(other.status, 201, other.text);
  const ctx = await w.context({ locale: 'en' });
  const page = await ctx.newPage();
  await page.goto(`${w.base}/support/requests`);
  await page.getByLabel('E-mail address').fill(english.email);
  await page.getByRole('button', { name: 'Send me a sign-in link' }).click();
  await page.locator('#signin-sent').waitFor();
  const rows = w.query(`SELECT JSON_UNQUOTE(JSON_EXTRACT(payload, '$.signin_url')) FROM outbox ` +
    `WHERE kind = 'signin' AND target = '${english.email}' ORDER BY id DESC LIMIT 1`);
  assert.equal(rows.length, 1);
  const link = rows[0][0].slice(BASE_URL.length);
  await page.goto(w.base + link);
  await Promise.all([page.waitForURL(/\/support\/requests$/), page.getByRole('button', { name: 'Continue' }).click()]);
  await page.getByText(EN.subjectText).waitFor();
  await page.getByText('Phoned in yesterday').waitFor();
  await w.shot(page, 'requests-en.png', { fullPage: true });
  await Promise.all([page.waitForURL(/\/support\/requests\/\d+$/), page.getByText('Phoned in yesterday').click()]);
  await page.getByText('by phone').waitFor();
  // The link worked once.
  const again = await page.goto(w.base + link);
  assert.equal(again.status(), 404);
  await ctx.close();
});
