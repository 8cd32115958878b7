// Hovering or focusing a suggestion lights up its evidence in the note; no framework, no network.
(function () {
  "use strict";
  function marksFor(label) {
    return Array.prototype.filter.call(document.querySelectorAll("#note mark[data-codes]"), function (m) {
      return m.getAttribute("data-codes").split(" ").indexOf(label) !== -1;
    });
  }
  function toggle(item, on) {
    var label = item.getAttribute("data-codes");
    item.classList.toggle("active", on);
    marksFor(label).forEach(function (m) { m.classList.toggle("active", on); });
  }
  document.querySelectorAll(".suggestion[data-codes]").forEach(function (item) {
    item.addEventListener("mouseenter", function () { toggle(item, true); });
    item.addEventListener("mouseleave", function () { toggle(item, false); });
    item.addEventListener("focusin", function () {
      toggle(item, true);
      var first = marksFor(item.getAttribute("data-codes"))[0];
      if (first) { first.scrollIntoView({block: "nearest"}); }
    });
    item.addEventListener("focusout", function () { toggle(item, false); });
  });
  document.querySelectorAll("#note mark[data-codes]").forEach(function (mark) {
    mark.addEventListener("click", function () {
      var first = mark.getAttribute("data-codes").split(" ")[0];
      var item = document.querySelector('.suggestion[data-codes="' + first + '"]');
      if (item) { item.scrollIntoView({block: "center"}); toggle(item, true); setTimeout(function () { toggle(item, false); }, 1200); }
    });
  });
})();
