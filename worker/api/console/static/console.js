// tokenworker ops console: buttons without reload, statuses kept current, the live feed,
// relative times. Plain DOM, no library; text goes in with textContent only.
(function () {
  'use strict';

  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute('content') : '';

  function relative(ts) {
    var delta = ts - Date.now() / 1000;
    var s = Math.abs(delta);
    if (s < 5) return 'now';
    var amount;
    if (s < 60) amount = Math.floor(s) + ' s';
    else if (s < 3600) amount = Math.floor(s / 60) + ' min';
    else if (s < 172800) amount = Math.floor(s / 3600) + ' h';
    else amount = Math.floor(s / 86400) + ' d';
    return delta > 0 ? 'in ' + amount : amount + ' ago';
  }

  function timeNode(ts) {
    if (ts === null || ts === undefined) {
      var none = document.createElement('span');
      none.className = 'none';
      none.textContent = '—';
      return none;
    }
    var t = document.createElement('time');
    var exact = new Date(ts * 1000).toISOString();
    t.setAttribute('datetime', exact);
    t.title = exact;
    t.dataset.ts = String(ts);
    t.textContent = relative(ts);
    return t;
  }

  function fill(cell, node) {
    while (cell.firstChild) cell.removeChild(cell.firstChild);
    cell.appendChild(node);
  }

  function errorNode(error) {
    var span = document.createElement('span');
    if (!error) {
      span.className = 'none';
      span.textContent = '—';
      return span;
    }
    var code = document.createElement('code');
    code.textContent = error.error || '';
    span.appendChild(code);
    if (error.error_description) span.appendChild(document.createTextNode(' ' + error.error_description));
    return span;
  }

  function badge(status) {
    var b = document.createElement('span');
    b.className = 'badge status-' + status;
    b.textContent = status;
    return b;
  }

  // Put a connection's current fields into its row (or its page).
  function update(holder, row) {
    holder.setAttribute('data-status', row.status);
    holder.querySelectorAll('[data-field]').forEach(function (cell) {
      var name = cell.getAttribute('data-field');
      if (name === 'status') fill(cell, badge(row.status));
      else if (name === 'last_error') fill(cell, errorNode(row.last_error));
      else if (name in row && /_at$/.test(name)) fill(cell, timeNode(row[name]));
    });
  }

  function holders() {
    return Array.prototype.slice.call(document.querySelectorAll('[data-connection-id]'))
      .filter(function (el) { return el.tagName !== 'LI' && el.getAttribute('data-connection-id'); });
  }

  // -- buttons: POST with the CSRF header, show the result in place ------------------------
  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (!form.matches || !form.matches('form.action')) return;
    ev.preventDefault();
    var question = form.getAttribute('data-confirm');
    if (question && !window.confirm(question)) return;
    var holder = form.closest('[data-connection-id]');
    var result = holder ? holder.querySelector('[data-field="result"]') : null;
    var button = form.querySelector('button');
    button.disabled = true;
    if (result) result.textContent = form.getAttribute('data-action') + '…';
    fetch(form.action, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf, 'Accept': 'application/json' }
    }).then(function (answer) {
      if (answer.redirected) { window.location.assign(answer.url); return null; }
      return answer.json();
    }).then(function (data) {
      if (!data) return;
      if (result) {
        result.textContent = data.message || data.outcome || '';
        result.className = 'result ' + (data.ok ? 'ok' : 'error');
      }
      if (data.connection && holder) update(holder, data.connection);
      if (data.integration && holder) {
        var cell = holder.querySelector('[data-field="integration_status"]');
        holder.setAttribute('data-status', data.integration.status);
        if (cell) fill(cell, badge(data.integration.status));
        var intro = holder.querySelector('[data-field="introspection"]');
        if (intro) intro.textContent = data.integration.introspection;
      }
      if (data.removed && holder) {
        holder.setAttribute('data-status', 'removed');
        holder.classList.add('removed');
        holder.querySelectorAll('form.action button').forEach(function (b) { b.disabled = true; });
      }
    }).catch(function () {
      if (result) { result.textContent = 'request failed'; result.className = 'result error'; }
    }).finally(function () {
      if (!holder || !holder.classList.contains('removed')) button.disabled = false;
    });
  });

  // -- bulk refresh: start a job, then poll its progress ---------------------------------
  function picked() {
    return Array.prototype.map.call(document.querySelectorAll('input.pick:checked'),
      function (box) { return box.value; });
  }

  function syncPicks() {
    var button = document.querySelector('form.bulk[data-selection] button');
    if (button) {
      var n = picked().length;
      button.disabled = n === 0;
      button.textContent = n ? 'Refresh ' + n + ' selected' : 'Refresh selected';
    }
  }

  document.addEventListener('change', function (ev) {
    var box = ev.target;
    if (box.matches && box.matches('input.pick-all')) {
      document.querySelectorAll('input.pick').forEach(function (b) { b.checked = box.checked; });
    }
    if (box.matches && box.matches('input.pick, input.pick-all')) syncPicks();
  });

  function showJob(out, job) {
    var total = job.total === null || job.total === undefined ? '?' : job.total;
    var outcomes = Object.keys(job.outcomes || {}).sort().map(function (k) {
      return k + ' ' + job.outcomes[k];
    }).join(', ');
    var bar = document.createElement('progress');
    bar.max = job.total || 1;
    bar.value = job.total ? job.done : 0;
    var text = document.createElement('span');
    text.textContent = ' ' + job.target + ': ' + job.done + '/' + total + ' ' + job.state +
      (outcomes ? ' (' + outcomes + ')' : '') + (job.message ? ': ' + job.message : '');
    fill(out, bar);
    out.appendChild(text);
    out.setAttribute('data-state', job.state);
  }

  function follow(out, jobId, tries) {
    fetch('/console/bulk/' + encodeURIComponent(jobId), {
      credentials: 'same-origin', headers: { 'Accept': 'application/json' }
    }).then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (job) {
        if (!job) return;
        showJob(out, job);
        if (job.state === 'running' && tries < 2400) {
          setTimeout(function () { follow(out, jobId, tries + 1); }, 500);
        } else { poll(); pollCounts(); }
      }).catch(function () { out.textContent = 'progress unavailable'; });
  }

  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (!form.matches || !form.matches('form.bulk')) return;
    ev.preventDefault();
    var body = new URLSearchParams();
    var integration = form.querySelector('input[name="integration"]');
    if (integration) body.set('integration', integration.value);
    else body.set('ids', picked().join(','));
    var out = document.getElementById('bulk-progress');
    fetch(form.action, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf, 'Accept': 'application/json',
                 'Content-Type': 'application/x-www-form-urlencoded' },
      body: body.toString()
    }).then(function (answer) { return answer.json(); })
      .then(function (data) {
        if (!out) return;
        if (!data.job) { out.textContent = data.message || 'refused'; return; }
        out.textContent = data.target + ': starting…';
        follow(out, data.job, 0);
      }).catch(function () { if (out) out.textContent = 'request failed'; });
  });

  // -- keep statuses current ---------------------------------------------------------------
  function poll() {
    var list = holders().filter(function (el) { return !el.classList.contains('removed'); });
    if (!list.length) return;
    var ids = list.map(function (el) { return el.getAttribute('data-connection-id'); });
    fetch('/console/api/connections?ids=' + ids.map(encodeURIComponent).join(','), {
      credentials: 'same-origin', headers: { 'Accept': 'application/json' }
    }).then(function (answer) {
      if (answer.redirected) { window.location.assign(answer.url); return null; }
      return answer.ok ? answer.json() : null;
    }).then(function (data) {
      if (!data) return;
      var byId = {};
      data.items.forEach(function (row) { byId[row.id] = row; });
      list.forEach(function (el) {
        var row = byId[el.getAttribute('data-connection-id')];
        if (row) update(el, row);
        else if (data.missing.indexOf(el.getAttribute('data-connection-id')) >= 0) {
          el.setAttribute('data-status', 'removed');
          el.classList.add('removed');
        }
      });
    }).catch(function () {});
  }

  function pollCounts() {
    if (!document.querySelector('[data-testid="count-active"]')) return;
    fetch('/console/api/status', { credentials: 'same-origin', headers: { 'Accept': 'application/json' } })
      .then(function (answer) { return answer.ok && !answer.redirected ? answer.json() : null; })
      .then(function (data) {
        if (!data) return;
        Object.keys(data.by_status).forEach(function (status) {
          var el = document.querySelector('[data-testid="count-' + status + '"]');
          if (el) el.textContent = String(data.by_status[status]);
        });
        var total = document.querySelector('[data-testid="count-connections"]');
        if (total) total.textContent = String(data.connections);
      }).catch(function () {});
  }

  function retime() {
    document.querySelectorAll('time[data-ts]').forEach(function (t) {
      t.textContent = relative(parseFloat(t.dataset.ts));
    });
  }

  // -- the live feed -----------------------------------------------------------------------
  var feed = document.getElementById('event-feed');
  var filter = document.getElementById('event-filter');
  var state = document.getElementById('feed-state');

  function applyFilter() {
    if (!feed) return;
    var wanted = filter ? filter.value : '';
    var alerts = (feed.getAttribute('data-alerts') || '').split(' ');
    feed.querySelectorAll('li').forEach(function (li) {
      var name = li.getAttribute('data-event');
      li.hidden = wanted === '@alerts' ? alerts.indexOf(name) < 0 : !!wanted && name !== wanted;
    });
  }

  function item(id, ev) {
    var li = document.createElement('li');
    li.className = 'ev new';
    li.setAttribute('data-event', ev.event || '');
    li.setAttribute('data-connection-id', ev.connection_id || '');
    li.setAttribute('data-id', id);
    var parsed = Date.parse(ev.ts || '');
    li.appendChild(timeNode(isNaN(parsed) ? null : parsed / 1000));
    li.appendChild(document.createTextNode(' '));
    var code = document.createElement('code');
    code.textContent = ev.event || '';
    li.appendChild(code);
    if (ev.connection_id) {
      li.appendChild(document.createTextNode(' '));
      var a = document.createElement('a');
      a.href = '/console/connections/' + encodeURIComponent(ev.connection_id);
      a.textContent = ev.connection_id;
      li.appendChild(a);
    }
    ['integration', 'action', 'actor', 'outcome', 'target', 'summary', 'error',
     'error_description'].forEach(function (k) {
      if (ev[k] === undefined || ev[k] === null || ev[k] === '') return;
      var k1 = document.createElement('span'); k1.className = 'k'; k1.textContent = ' ' + k;
      var v1 = document.createElement('span'); v1.className = 'v'; v1.textContent = String(ev[k]);
      li.appendChild(k1); li.appendChild(document.createTextNode('=')); li.appendChild(v1);
    });
    return li;
  }

  if (feed && window.EventSource) {
    var only = feed.getAttribute('data-connection-filter');
    var after = feed.getAttribute('data-after');
    var source = new EventSource('/console/events/stream' + (after ? '?after=' + encodeURIComponent(after) : ''));
    source.onopen = function () { if (state) state.textContent = 'live'; };
    source.onerror = function () { if (state) state.textContent = 'reconnecting…'; };
    source.onmessage = function (msg) {
      var ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (only && ev.connection_id !== only) return;
      var li = item(msg.lastEventId, ev);
      feed.insertBefore(li, feed.firstChild);
      while (feed.children.length > 200) feed.removeChild(feed.lastChild);
      applyFilter();
      if (ev.connection_id) { poll(); pollCounts(); }
    };
  }
  if (filter) filter.addEventListener('change', applyFilter);
  applyFilter();

  setInterval(poll, 5000);
  setInterval(pollCounts, 10000);
  setInterval(retime, 30000);
})();
