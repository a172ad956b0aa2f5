// The ops page refreshes its sections in place every data-refresh-s seconds, in the page's
// language; the status line's words come from the page (data-updated, data-failed).
(function () {
  var body = document.body;
  var every = parseInt(body.getAttribute('data-refresh-s') || '5', 10) * 1000;
  var lang = document.documentElement.getAttribute('lang') || 'en';
  var target = document.getElementById('sections');
  var status = document.getElementById('refresh-status');
  function refresh() {
    fetch('/admin/sections?lang=' + encodeURIComponent(lang),
          {credentials: 'same-origin', cache: 'no-store'})
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); throw new Error('signed out'); }
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.text();
      })
      .then(function (html) {
        target.innerHTML = html;
        status.textContent = body.getAttribute('data-updated') + ' ' +
          new Date().toLocaleTimeString(lang);
        status.className = 'muted';
      })
      .catch(function (err) {
        status.textContent = body.getAttribute('data-failed') + ': ' + err.message;
        status.className = 'bad';
      })
      .finally(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
