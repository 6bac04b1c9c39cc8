/*
 * Kefu support form, embedded in another site:
 *
 *   <script src="https://support.example.com/support/embed.js" async
 *           data-lang="zh-CN" data-target="#support-form"></script>
 *
 * Renders the form in an iframe served by Kefu (so the form keeps Kefu's
 * security headers, and the embedding page never sees what is typed), right
 * after this script tag or inside the element named by data-target.  The
 * frame grows with its content.  Kefu's webform_frame_ancestors setting
 * must allow the embedding site.  A classic script (not a module): it needs
 * document.currentScript.
 */
(function () {
  'use strict';
  var script = document.currentScript;
  if (!script) return;
  var base = new URL(script.src, document.baseURI).origin;
  var lang = script.getAttribute('data-lang');
  var target = script.getAttribute('data-target');
  var frame = document.createElement('iframe');
  var src = base + '/support/new?embed=1';
  if (lang) src += '&lang=' + encodeURIComponent(lang);
  frame.src = src;
  frame.title = script.getAttribute('data-title') || 'Support';
  frame.className = 'kefu-support-frame';
  frame.style.width = '100%';
  frame.style.border = '0';
  frame.style.minHeight = '40rem';
  frame.setAttribute('referrerpolicy', 'no-referrer');
  var host = target ? document.querySelector(target) : null;
  if (host) {
    host.appendChild(frame);
  } else if (script.parentNode) {
    script.parentNode.insertBefore(frame, script.nextSibling);
  }
  window.addEventListener('message', function (ev) {
    if (ev.origin !== base || ev.source !== frame.contentWindow) return;
    var d = ev.data;
    if (d && d.type === 'kefu:height' && typeof d.height === 'number' && d.height > 0) {
      frame.style.minHeight = '0';
      frame.style.height = Math.ceil(d.height) + 'px';
    }
  });
})();
