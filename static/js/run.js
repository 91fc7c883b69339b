// The live run page. The server renders everything stored so far and the last event seq; this
// script resumes the stream after that seq over the WebSocket (or by polling the stored events when
// the socket fails) and applies each event: node statuses on the diagram and in the panels, the
// timeline, streamed LLM tokens and the progress bar. Nothing is lost on reload.
(function () {
  "use strict";
  var configEl = document.getElementById("run-config");
  if (!configEl) return;
  var cfg = JSON.parse(configEl.textContent);
  var lastSeq = cfg.lastSeq || 0;
  var finished = cfg.finished;
  var statuses = cfg.statuses || {};
  var FINAL_NODE = ["succeeded", "failed", "skipped", "cancelled"];
  var KNOWN_NODE = ["pending", "running", "waiting", "succeeded", "failed", "skipped", "cancelled"];
  var FINAL_RUN = ["run.succeeded", "run.failed", "run.cancelled"];
  var NODE_STATUS = {
    "node.started": "running", "node.retrying": "running", "node.succeeded": "succeeded",
    "node.failed": "failed", "node.skipped": "skipped", "node.cancelled": "cancelled", "node.waiting": "waiting"
  };
  var RUN_STATUS = {
    "run.queued": "queued", "run.started": "running", "run.resumed": "running", "run.waiting": "waiting",
    "run.succeeded": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled"
  };
  // Exposed for the browser tests and for debugging: how events arrived.
  var live = window.gwRun = { received: 0, tokens: 0, mode: "none", lastSeq: lastSeq, finished: finished };

  function $(sel, root) { return (root || document).querySelector(sel); }
  function cssEscape(s) { return window.CSS && CSS.escape ? CSS.escape(s) : String(s).replace(/"/g, '\\"'); }

  function setStatusClass(el, status) {
    if (!el) return;
    Array.prototype.slice.call(el.classList).forEach(function (c) { if (c.indexOf("st-") === 0) el.classList.remove(c); });
    el.classList.add("st-" + status);
  }

  function badge(status) {
    var span = document.createElement("span");
    span.className = "badge st-" + status;
    span.setAttribute("data-status", status);
    span.textContent = status.charAt(0).toUpperCase() + status.slice(1);
    return span;
  }

  function updateProgress() {
    var done = 0;
    Object.keys(statuses).forEach(function (k) { if (FINAL_NODE.indexOf(statuses[k]) >= 0) done++; });
    var total = cfg.totalNodes || 0;
    var pct = total ? Math.round(done * 100 / total) : (finished ? 100 : 0);
    var bar = $("#progress .progress-bar");
    if (bar) bar.style.width = pct + "%";
    var text = $("#progress-done");
    if (text) text.textContent = done;
    var pb = $("#progress");
    if (pb) pb.setAttribute("aria-valuenow", done);
  }

  function addTimeline(ev) {
    var list = $("#timeline");
    if (!list) return;
    var empty = $("#timeline-empty");
    if (empty) empty.remove();
    var li = document.createElement("li");
    li.className = "ev ev-" + ev.type.replace(/[^a-z0-9]+/gi, "-").toLowerCase();
    li.setAttribute("data-seq", ev.seq);
    var t = document.createElement("time");
    var when = ev.created_at ? new Date(ev.created_at) : new Date();
    t.textContent = when.toTimeString().slice(0, 8);
    var code = document.createElement("code");
    code.textContent = ev.type;
    li.appendChild(t);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(code);
    var data = ev.data || {};
    if (data.node_id) {
      var strong = document.createElement("strong");
      strong.textContent = data.node_id;
      li.appendChild(document.createTextNode(" "));
      li.appendChild(strong);
    }
    var note = data.message || data.error;
    if (note) li.appendChild(document.createTextNode(" " + String(note).slice(0, 160)));
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
  }

  function appendToken(nodeId, text) {
    var pre = document.getElementById("tokens-" + nodeId);
    if (!pre) return;
    var box = pre.closest(".tokens-box");
    if (box) box.hidden = false;
    var panel = document.getElementById("panel-" + nodeId);
    if (panel) panel.open = true;
    pre.textContent += text;
    live.tokens++;
  }

  function refreshPanel(nodeId) {
    var url = cfg.nodeUrl.replace("__node__", encodeURIComponent(nodeId));
    return fetch(url, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
      if (!html) return;
      var old = document.getElementById("panel-" + nodeId);
      if (!old || inUse(old)) return;  // never swap away a comment being typed into its approval form
      var tpl = document.createElement("template");
      tpl.innerHTML = html.trim();
      var fresh = tpl.content.firstElementChild;
      if (fresh) old.replaceWith(fresh);
    }).catch(function () {});
  }

  // Whether the person is filling in a form inside el (an approval comment): never swap that away.
  function inUse(el) {
    if (el.contains(document.activeElement) && document.activeElement !== document.body) return true;
    return Array.prototype.some.call(el.querySelectorAll("textarea, input[type=text]"), function (f) { return f.value !== ""; });
  }

  // When the run ends (or parks for a person), swap in the server's rendering of the parts that
  // only exist then: outputs, artifacts, the approval forms.
  function softRefresh(final) {
    return fetch(window.location.href, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      ["node-panels", "run-outputs", "artifacts", "run-status", "progress"].forEach(function (id) {
        var fresh = doc.getElementById(id), old = document.getElementById(id);
        if (fresh && old && !inUse(old)) old.replaceWith(document.importNode(fresh, true));
      });
      var actions = doc.querySelector(".page-head .actions"), oldActions = $(".page-head .actions");
      if (actions && oldActions && !inUse(oldActions)) oldActions.replaceWith(document.importNode(actions, true));
      var err = doc.getElementById("run-error");
      if (err && !document.getElementById("run-error")) $("#progress").insertAdjacentElement("afterend", document.importNode(err, true));
      if (final) document.body.setAttribute("data-run-final", "1");
    }).catch(function () {});
  }

  function handle(ev) {
    if (!ev || typeof ev.seq !== "number" || ev.seq <= lastSeq) return;
    lastSeq = live.lastSeq = ev.seq;
    live.received++;
    var data = ev.data || {};
    if (ev.type === "llm.token") {
      appendToken(data.node_id, data.text || "");
      return;
    }
    addTimeline(ev);
    var nodeStatus = NODE_STATUS[ev.type];
    if (!nodeStatus && ev.type.indexOf("node.") === 0 && KNOWN_NODE.indexOf(data.status) >= 0) nodeStatus = data.status;
    if (nodeStatus && data.node_id) {
      statuses[data.node_id] = nodeStatus;
      var g = document.querySelector('.diagram .node[data-node="' + cssEscape(data.node_id) + '"]');
      setStatusClass(g, nodeStatus);
      var panel = document.getElementById("panel-" + data.node_id);
      setStatusClass(panel, nodeStatus);
      var pb = panel && panel.querySelector("summary .badge");
      if (pb) pb.replaceWith(badge(nodeStatus));
      if (nodeStatus !== "running") refreshPanel(data.node_id);
      updateProgress();
    }
    var runStatus = RUN_STATUS[ev.type];
    if (runStatus) {
      var holder = $("#run-status");
      if (holder) { holder.innerHTML = ""; holder.appendChild(badge(runStatus)); }
      setStatusClass($("#progress .progress-bar"), runStatus);
      if (runStatus === "waiting") softRefresh(false);
    }
    if (FINAL_RUN.indexOf(ev.type) >= 0) finishRun(runStatus);
  }

  function finishRun(status) {
    finished = live.finished = true;
    var holder = $("#run-status");
    if (holder && status) { holder.innerHTML = ""; holder.appendChild(badge(status)); }
    setLive(false);
    updateProgress();
    softRefresh(true);
  }

  function setLive(on) {
    var el = $("#live-state");
    if (el) el.hidden = !on;
  }

  var pollTimer = null;
  function poll() {
    live.mode = "poll";
    setLive(true);
    fetch(cfg.eventsUrl + "?after=" + lastSeq, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
      (body.events || []).forEach(handle);
      if (body.finished && !(body.events || []).length) {
        if (!finished) finishRun(body.status);
        return;
      }
      pollTimer = setTimeout(poll, 700);
    }).catch(function () { pollTimer = setTimeout(poll, 2000); });
  }

  function connect() {
    if (!("WebSocket" in window)) return poll();
    var proto = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket, opened = false, fellBack = false;
    function fallBack() {
      if (fellBack || finished) return;
      fellBack = true;
      poll();
    }
    try {
      socket = new WebSocket(proto + window.location.host + cfg.wsPath + "?after=" + lastSeq);
    } catch (e) {
      return poll();
    }
    socket.onopen = function () { opened = true; live.mode = "ws"; setLive(true); };
    socket.onmessage = function (msg) {
      var ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (Array.isArray(ev)) ev.forEach(handle); else handle(ev);
      if (finished) socket.close();
    };
    socket.onerror = function () { if (!opened) fallBack(); };
    socket.onclose = function () { if (!finished) fallBack(); };
  }

  // A click on a node in the diagram opens its panel.
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest('.diagram a.node-link[href^="#panel-"]');
    if (!link) return;
    var panel = document.getElementById(link.getAttribute("href").slice(1));
    if (panel) panel.open = true;
  });

  updateProgress();
  if (!finished) connect();
})();
