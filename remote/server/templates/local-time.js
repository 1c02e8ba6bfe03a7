// Times on the pages are written in UTC; show them in the viewer's time zone (UTC stays
// in the title, shown on hover). Without JavaScript the UTC text stays.
document.querySelectorAll("time[datetime]").forEach(function (el) {
  var moment = new Date(el.getAttribute("datetime"));
  if (isNaN(moment)) return;
  var pad = function (n) { return String(n).padStart(2, "0"); };
  el.textContent = moment.getFullYear() + "-" + pad(moment.getMonth() + 1) + "-" + pad(moment.getDate()) +
    " " + pad(moment.getHours()) + ":" + pad(moment.getMinutes()) + ":" + pad(moment.getSeconds());
});
