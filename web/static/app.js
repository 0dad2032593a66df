// alorules UI helpers. Every page works without this script; it only
// (1) shows <time> elements (and chart tooltips) in the viewer's zone with
// a relative time, and
// (2) refreshes lists marked data-refresh by fetching their rows fragment,
// which carries the pager too, so that "Older" always starts after the
// last row shown.
(function () {
  "use strict";

  var parts = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" };
  var thisYear = new Intl.DateTimeFormat(undefined, parts);
  parts.year = "numeric";
  var otherYear = new Intl.DateTimeFormat(undefined, parts);
  var rel = window.Intl && Intl.RelativeTimeFormat
    ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" }) : null;
  var units = [["year", 31536000], ["month", 2592000], ["day", 86400],
    ["hour", 3600], ["minute", 60], ["second", 1]];

  function relative(d) {
    var s = (d.getTime() - Date.now()) / 1000;
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(s) >= units[i][1] || units[i][0] === "second") {
        return rel.format(Math.round(s / units[i][1]), units[i][0]);
      }
    }
    return "";
  }

  var hourOnly = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

  function localise(root) {
    // An SVG <title> (a chart bar's tooltip) holds text only, not a
    // <time>: it carries the hour in data-hour and the rest in data-text.
    var titles = root.querySelectorAll("title[data-hour]");
    for (var j = 0; j < titles.length; j++) {
      var h = new Date(titles[j].getAttribute("data-hour"));
      if (isNaN(h.getTime())) continue;
      titles[j].textContent = hourOnly.format(h) + (rel ? " · " + relative(h) : "") + (titles[j].getAttribute("data-text") || "");
    }

    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var t = times[i];
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) continue;
      if (!t.hasAttribute("data-utc")) t.setAttribute("data-utc", t.textContent);
      t.title = t.getAttribute("data-utc");
      var abs = d.getFullYear() === new Date().getFullYear() ? thisYear : otherYear;
      t.textContent = abs.format(d) + (rel ? " · " + relative(d) : "");
    }
  }

  function refresh(el) {
    var url = el.getAttribute("data-refresh");
    var busy = false;
    setInterval(function () {
      // Leave the list alone while it is hidden, or while the keyboard
      // focus is inside it: swapping it would lose the user's place.
      if (busy || document.hidden || el.contains(document.activeElement)) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) { el.innerHTML = html; localise(el); })
        .catch(function () { /* keep the old rows; try again next time */ })
        .then(function () { busy = false; });
    }, 5000);
  }

  function start() {
    localise(document);
    var lists = document.querySelectorAll("[data-refresh]");
    for (var i = 0; i < lists.length; i++) refresh(lists[i]);
    // Relative times age; refresh their words once a minute.
    setInterval(function () { localise(document); }, 60000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
