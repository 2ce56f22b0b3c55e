// Keyboard stepping through the slices: with the pointer over a slice view, the arrow keys (and Page Up/Down) move
// that view's plane by one voxel along its normal. The key is written to the dcc.Store "slice-keys", which drives
// the crosshair callback.
(function () {
  var plane = null;
  var count = 0;
  document.addEventListener("mouseover", function (event) {
    var holder = event.target.closest ? event.target.closest("[data-plane]") : null;
    plane = holder ? holder.getAttribute("data-plane") : null;
  });
  document.addEventListener("keydown", function (event) {
    if (!plane || !window.dash_clientside || !window.dash_clientside.set_props) { return; }
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "select" || tag === "textarea") { return; }
    var step = {ArrowUp: 1, ArrowRight: 1, PageUp: 1, ArrowDown: -1, ArrowLeft: -1, PageDown: -1}[event.key];
    if (!step) { return; }
    event.preventDefault();
    count += 1;
    window.dash_clientside.set_props("slice-keys", {data: {step: step, plane: plane, count: count}});
  });
})();
