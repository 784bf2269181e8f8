/* eaft analyze's sample browser: renders the samples of the JSON blob #eaft-data one page at a time.
   State lives in the URL fragment (#sort=nll&measure=prob&quadrant=...&per=25&page=2&focus=S.K.J), so a view
   can be linked and reloaded. When the first page is laid out, <html data-rendered> holds performance.now()
   (data-script-ms: this script's share, data-parse-ms: the JSON blob's); at load, data-resources counts what the
   browser fetched (the Content-Security-Policy allows nothing, so it stays 0). */
(() => {
  "use strict";
  const started = performance.now();
  const D = JSON.parse(document.getElementById("eaft-data").textContent);
  const parsed = performance.now();
  const M = D.meta, V = D.vocab, OBJ = M.objectives, QN = M.quadrants;
  const AXIS = M.thresholds.entropy_column === "entropy_full" ? "hf" : "ht";
  const $ = (id) => document.getElementById(id);
  const at = (a, j) => (typeof a === "number" ? a : a[j]); // a column equal over a sequence is one number
  const weight = (s, name) => (typeof s.w[name] === "string" ? s[s.w[name]] : s.w[name]); // or another column's key
  const list = $("sample-list"), tip = $("tip"), root = document.documentElement;
  const state = { measure: "eaft", sort: "density", quadrant: "", per: 25, page: 1, focus: "" };
  const ALLOWED = { measure: ["eaft", "prob", "entropy", "conflict"], sort: ["density", "nll", "file"], quadrant: ["", ...QN] };

  // Light-to-mid blue (ColorBrewer Blues): black text stays readable (contrast >= 6:1) at the dark end.
  const LO = [247, 251, 255], HI = [66, 146, 198];
  const RAMP = Array.from({ length: 101 }, (_, i) =>
    "rgb(" + LO.map((lo, k) => Math.round(lo + ((HI[k] - lo) * i) / 100)).join(",") + ")");
  const CONFLICT_BG = "#fdba74";
  const VALUE = { eaft: (s, j) => at(weight(s, "eaft"), j), prob: (s, j) => at(s.p, j), entropy: (s, j) => at(s[AXIS], j) };
  const NAMES = { eaft: "EAFT weight", prob: "p(y)", entropy: AXIS === "ht" ? "H̃ (top-k)" : "H̃ (exact)" };

  const first = (g) => g.seqs[0];
  const SORTS = {
    density: (a, b) => first(b).d - first(a).d || first(b).c - first(a).c || a.s - b.s,
    nll: (a, b) => first(b).nll - first(a).nll || a.s - b.s,
    file: (a, b) => a.s - b.s,
  };

  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" };
  const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ESC[c]);
  const pct = (x) => (100 * x).toFixed(1) + "%";
  const num = (x) => (x === 0 ? "0" : Math.abs(x) >= 0.001 ? x.toFixed(4) : x.toExponential(2));
  // a label token that is only a line break gets a visible mark, so that it can carry an underline and focus
  const shown = (t) => (/^[ \t]*\n\s*$/.test(t) ? "⏎" + t : t);

  function background(s, j) {
    if (state.measure === "conflict") return s.q[j] === "0" ? CONFLICT_BG : "";
    const v = VALUE[state.measure](s, j);
    return RAMP[Math.max(0, Math.min(100, Math.round(v * 100)))];
  }

  const positions = new WeakMap(); // label positions, from the blob's (start, length) runs
  function labels(s) {
    let out = positions.get(s);
    if (!out) {
      out = [];
      for (let r = 0; r < s.lab.length; r += 2) for (let i = 0; i < s.lab[r + 1]; i++) out.push(s.lab[r] + i);
      positions.set(s, out);
    }
    return out;
  }

  function tokensHtml(s) {
    const out = [], lab = labels(s);
    let j = 0, ctx = "";
    for (let i = 0; i < s.ids.length; i++) {
      const t = V[s.ids[i]];
      if (j < lab.length && lab[j] === i) {
        if (ctx) out.push('<span class="ctx">' + esc(ctx) + "</span>");
        ctx = "";
        const bg = background(s, j);
        out.push('<span class="tok' + (s.q[j] === "0" ? " c" : "") + '" data-j="' + j + '" tabindex="' + (j ? -1 : 0) +
          '"' + (bg ? ' style="background:' + bg + '"' : "") + ">" + esc(shown(t)) + "</span>");
        j++;
      } else ctx += t;
    }
    if (ctx) out.push('<span class="ctx">' + esc(ctx) + "</span>");
    return out.join("");
  }

  function seqHtml(g, gi, k) {
    const s = g.seqs[k];
    const name = k === 0 ? "sample " + g.s : "rollout " + s.r + " of sample " + g.s;
    const pick = k === 0 ? '<span class="pick">' + (g.pick === "top" ? "densest conflicts" : "random draw") + "</span>" : "";
    const stats = s.n ? s.c + " of " + s.n + " label tokens in conflict (" + pct(s.d) + "), mean NLL " + s.nll.toFixed(3)
      : "no label tokens";
    return '<div class="seq" data-g="' + gi + '" data-k="' + k + '" role="group" aria-label="' + esc(name) + '">' +
      "<h3>" + esc(name) + pick + '</h3><p class="stats">' + stats + '</p><div class="text">' + tokensHtml(s) +
      "</div></div>";
  }

  function groupHtml(gi) {
    const g = D.groups[gi];
    const rollouts = g.seqs.slice(1).map((_, k) => seqHtml(g, gi, k + 1)).join("");
    return '<article class="group' + (rollouts ? " with-rollouts" : "") + '" data-sample="' + g.s + '">' +
      seqHtml(g, gi, 0) + (rollouts ? '<div class="rollouts">' + rollouts + "</div>" : "") + "</article>";
  }

  function matching() {
    const qi = QN.indexOf(state.quadrant);
    const keep = D.groups.map((_, i) => i).filter((i) => qi < 0 || D.groups[i].seqs.some((s) => s.qc[qi] > 0));
    return keep.sort((a, b) => SORTS[state.sort](D.groups[a], D.groups[b]));
  }

  function legend() {
    if (state.measure === "conflict") {
      $("legend").innerHTML = '<span class="swatch" style="background:' + CONFLICT_BG + '"></span> confident conflict' +
        ' <span class="swatch"></span> other label token';
      return;
    }
    $("legend").innerHTML = NAMES[state.measure] + ": 0 <span class=\"bar\" style=\"background:linear-gradient(to right," +
      RAMP[0] + "," + RAMP[100] + ')"></span> 1';
  }

  function render() {
    const groups = matching();
    const pages = Math.max(1, Math.ceil(groups.length / state.per));
    state.page = Math.min(Math.max(1, state.page), pages);
    const start = (state.page - 1) * state.per, page = groups.slice(start, start + state.per);
    list.innerHTML = page.length ? page.map(groupHtml).join("") : "<p>No embedded sample has a token in this quadrant.</p>";
    const filtered = groups.length < D.groups.length ? " (of " + D.groups.length + " embedded)" : "";
    $("pageinfo").textContent = groups.length
      ? "samples " + (start + 1) + "–" + (start + page.length) + " of " + groups.length + filtered + ", page " +
        state.page + " of " + pages
      : "no samples" + filtered;
    $("prev").disabled = state.page <= 1;
    $("next").disabled = state.page >= pages;
    legend();
    Object.assign(list.dataset, { sort: state.sort, measure: state.measure, quadrant: state.quadrant, page: state.page });
  }

  const grad = (s, name, j) => Math.abs(at(weight(s, name), j)) * at(s.gn, j); // = the table's grad_<name>
  const gradTotals = new WeakMap();
  function gradTotal(s, name) {
    let totals = gradTotals.get(s);
    if (!totals) gradTotals.set(s, (totals = {}));
    if (!(name in totals)) {
      totals[name] = 0;
      for (let j = 0; j < s.n; j++) totals[name] += grad(s, name, j);
    }
    return totals[name];
  }

  function showTip(el) {
    const seq = el.closest(".seq"), j = +el.dataset.j;
    const s = D.groups[+seq.dataset.g].seqs[+seq.dataset.k], q = +s.q[j], p = at(s.p, j);
    const rows = OBJ.map((n) => {
      const g = grad(s, n, j), total = gradTotal(s, n);
      return "<tr><th scope=\"row\">" + esc(n) + "</th><td>" + num(at(weight(s, n), j)) + "</td><td>" + num(g) + "</td><td>" +
        (total > 0 ? pct(g / total) : "—") + "</td></tr>";
    }).join("");
    tip.innerHTML = "<div><code>" + esc(JSON.stringify(V[s.ids[labels(s)[j]]])) + '</code> · <span class="q' +
      (q === 0 ? ' c">' : '">') + esc(M.quadrant_labels[q]) + "</span></div>" +
      "<div>p(y) = " + num(p) + (p > 0 ? " · NLL = " + (-Math.log(p)).toFixed(3) : "") + "</div>" +
      "<div>H̃ top-k = " + num(at(s.ht, j)) + " · H̃ exact = " + num(at(s.hf, j)) + "</div>" +
      "<table><thead><tr><th>objective</th><th>weight</th><th>‖∂ℓ/∂z‖</th><th>share of sequence</th></tr></thead>" +
      "<tbody>" + rows + "</tbody></table>";
    tip.hidden = false;
    const r = el.getBoundingClientRect();
    let top = r.bottom + 6;
    if (top + tip.offsetHeight > innerHeight) top = Math.max(4, r.top - tip.offsetHeight - 6);
    tip.style.top = top + "px";
    tip.style.left = Math.max(4, Math.min(r.left, innerWidth - tip.offsetWidth - 8)) + "px";
  }

  const isToken = (el) => el && el.classList && el.classList.contains("tok") && list.contains(el);
  list.addEventListener("mouseover", (e) => isToken(e.target) && showTip(e.target));
  list.addEventListener("mouseout", () => (isToken(document.activeElement) ? showTip(document.activeElement) : (tip.hidden = true)));
  list.addEventListener("focusin", (e) => isToken(e.target) && showTip(e.target));
  list.addEventListener("focusout", () => (tip.hidden = true));
  list.addEventListener("keydown", (e) => {
    if (!isToken(e.target)) return;
    const toks = [...e.target.closest(".text").querySelectorAll(".tok")];
    const i = toks.indexOf(e.target), conflict = (t) => t.classList.contains("c");
    const moves = {
      ArrowRight: () => i + 1, ArrowLeft: () => i - 1, Home: () => 0, End: () => toks.length - 1,
      n: () => toks.findIndex((t, x) => x > i && conflict(t)),
      p: () => toks.map((t, x) => (x < i && conflict(t) ? x : -1)).reduce((a, b) => Math.max(a, b), -1),
    };
    if (e.key === "Escape") tip.hidden = true;
    if (!moves[e.key]) return;
    e.preventDefault();
    const n = moves[e.key]();
    if (n >= 0 && n < toks.length && n !== i) {
      e.target.tabIndex = -1;
      toks[n].tabIndex = 0;
      toks[n].focus();
    }
  });

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    for (const k of ["measure", "sort", "quadrant"]) if (p.has(k) && ALLOWED[k].includes(p.get(k))) state[k] = p.get(k);
    const per = parseInt(p.get("per"), 10), page = parseInt(p.get("page"), 10);
    if (M.per_page.includes(per)) state.per = per;
    if (page >= 1) state.page = page;
    state.focus = p.get("focus") || "";
  }

  function writeHash() {
    const p = new URLSearchParams({ sort: state.sort, measure: state.measure, per: state.per, page: state.page });
    if (state.quadrant) p.set("quadrant", state.quadrant);
    try {
      history.replaceState(null, "", "#" + p.toString());
    } catch (err) {
      /* some browsers refuse history edits on file: pages; the view still works, it just is not linkable */
    }
  }

  function syncControls() {
    for (const k of ["measure", "sort", "quadrant", "per"]) $(k).value = String(state[k]);
  }

  function applyFocus() { // focus=S.K.J: sample S, its sequence K (0 = the data sample), label token J
    const [s, k, j] = state.focus.split(".").map(Number);
    const index = matching().findIndex((gi) => D.groups[gi].s === s);
    if (index < 0) return;
    state.page = Math.floor(index / state.per) + 1;
    render();
    const el = list.querySelector('article[data-sample="' + s + '"] .seq[data-k="' + (k || 0) + '"] .tok[data-j="' + (j || 0) + '"]');
    if (el) {
      el.focus();
      showTip(el);
    }
  }

  for (const id of ["measure", "sort", "quadrant", "per"]) {
    $(id).addEventListener("change", () => {
      state[id] = id === "per" ? +$(id).value : $(id).value;
      if (id !== "measure") state.page = 1;
      writeHash();
      render();
    });
  }
  for (const [id, step] of [["prev", -1], ["next", 1]]) {
    $(id).addEventListener("click", () => {
      state.page += step;
      writeHash();
      render();
      list.scrollIntoView();
    });
  }
  addEventListener("hashchange", () => {
    readHash();
    syncControls();
    render();
  });

  readHash();
  syncControls();
  render();
  if (state.focus) applyFocus();
  void list.offsetHeight; // force style and layout now, so that the mark counts them
  root.dataset.rendered = performance.now().toFixed(1);
  root.dataset.scriptMs = (performance.now() - started).toFixed(1);
  root.dataset.parseMs = (parsed - started).toFixed(1);
  addEventListener("load", () => (root.dataset.resources = String(performance.getEntriesByType("resource").length)));
})();
