// Small progressive enhancements for every page; each page works without them.
(function () {
  "use strict";
  // The workspace switcher submits as soon as another workspace is chosen.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    var form = select.form;
    if (!form) return;
    form.querySelectorAll(".js-hide").forEach(function (el) { el.hidden = true; });
    select.addEventListener("change", function () { form.submit(); });
  });
  // Buttons that destroy something ask first when they carry data-confirm.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var message = button && button.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
