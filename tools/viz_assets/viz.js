/* fxopt viz: the pass-trace page. Plain JavaScript, no libraries, no network.
 *
 * Data: the packed trace (tools/viz_data.py: distinct node records once, snapshots as record indices).
 * View: the graph of one snapshot with modules (dotted provenance module paths) collapsed into boxes;
 * only the visible boxes are laid out (layered Sugiyama-style: longest-path layers, dummy nodes for long
 * edges, barycenter sweeps keeping the ordering with the fewest crossings, isotonic x placement) and drawn
 * on a canvas with culling and level of detail. Diff mode overlays the previous snapshot: added, removed
 * and changed nodes by name (FX node names are stable unless a node is replaced).
 * window.fxviz exposes the state and a few actions for tests and the console.
 */
(function () {
  'use strict';
  var T_START = performance.now();
  var DATA = JSON.parse(document.getElementById('fxopt-trace').textContent);
  var RECORDS = DATA.records, SNAPS = DATA.snapshots, REPORTS = DATA.reports || [];
  var BUDGET = 60;          // boxes shown by the default (auto-expanded) view
  var ROOT_CHUNK = 1000;    // root-level nodes beyond 2x this are boxed in chunks of this many
  var EXPAND_ALL_LIMIT = 4000;
  var LAYER_GAP = 74, NODE_H = 36, GROUP_H = 42, X_GAP = 26;
  var COLORS = { none: '#eef1f5', cpu: '#cfe3ff' };
  var ACCEL = ['#ffd8a8', '#c3f0c8', '#e5d0ff', '#ffe3ec', '#d3f9f7'];
  var DIFF = { add: '#2f9e44', rem: '#d92d20', chg: '#e0a100' };

  var $ = function (id) { return document.getElementById(id); };
  var canvas = $('canvas'), ctx = canvas.getContext('2d');

  // ------------------------------------------------------------------ formatting
  function human(n, unit) {
    if (n === null || n === undefined || n === '') return '-';
    if (typeof n !== 'number') return String(n);
    var a = Math.abs(n), s = ['', 'K', 'M', 'G', 'T', 'P'], i = 0;
    while (a >= 1000 && i < s.length - 1) { a /= 1000; n /= 1000; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n >= 100 ? 0 : n >= 10 ? 1 : 2)) + ' ' + s[i] + (unit || '');
  }
  function bytes(n) {
    if (typeof n !== 'number') return n === undefined || n === null ? '-' : String(n);
    var u = ['B', 'KB', 'MB', 'GB', 'TB'], i = 0, v = n;
    while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)) + ' ' + u[i];
  }
  function esc(s) {
    return String(s === undefined || s === null ? '' : s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function shortTarget(rec) {
    if (rec.op === 'placeholder') return 'input';
    if (rec.op === 'get_attr') return 'weight';
    if (rec.op === 'output') return 'output';
    var t = String(rec.target || rec.op);
    var p = t.split('.');
    if (p[0] === 'aten' && p.length >= 2) return p[1];
    return p.length > 1 ? p[p.length - 2] === 'default' ? p[p.length - 3] : p[p.length - 1] : t;
  }
  function baseName(src) { return src ? String(src).split(/[\\/]/).pop() : ''; }
  function num(v) { return typeof v === 'number' ? v : (v === undefined || v === null ? 0 : Number(v) || 0); }

  // ------------------------------------------------------------------ snapshots
  var snapCache = {};
  function baseIndex(i) { var s = SNAPS[i]; while (s.nodes === undefined) s = SNAPS[s.same_as]; return s.index; }
  function snapshot(i) {
    var b = baseIndex(i);
    if (snapCache[b]) return snapCache[b];
    var ids = SNAPS[b].nodes, byName = new Map(), order = new Map();
    for (var k = 0; k < ids.length; k++) { var r = RECORDS[ids[k]]; byName.set(r.name, ids[k]); order.set(r.name, k); }
    var users = new Map();
    for (k = 0; k < ids.length; k++) {
      var rec = RECORDS[ids[k]], ins = rec.inputs || [];
      for (var j = 0; j < ins.length; j++) {
        var l = users.get(ins[j]); if (!l) users.set(ins[j], l = []); l.push(rec.name);
      }
    }
    var rootCount = 0;
    for (k = 0; k < ids.length; k++) if (!RECORDS[ids[k]].module) rootCount++;
    return (snapCache[b] = { index: b, ids: ids, byName: byName, order: order, users: users, chunkRoot: rootCount > 2 * ROOT_CHUNK });
  }
  function moduleOf(snap, rec) {
    if (rec.module) return rec.module;
    if (snap.chunkRoot && rec.op !== 'placeholder' && rec.op !== 'output') {
      var k = Math.floor((snap.order.get(rec.name) || 0) / ROOT_CHUNK);
      return '[nodes ' + (k * ROOT_CHUNK) + '-' + ((k + 1) * ROOT_CHUNK - 1) + ']';
    }
    return '';
  }
  function prefixes(path) {
    if (!path) return [];
    if (path.charAt(0) === '[') return [path];
    var parts = path.split('.'), out = [], acc = '';
    for (var i = 0; i < parts.length; i++) { acc = i ? acc + '.' + parts[i] : parts[i]; out.push(acc); }
    return out;
  }
  /* The diff of snapshot i against i-1: {added:[names], removed:[names], changed: Map name->[fields]}. */
  var DIFF_FIELDS = ['op', 'target', 'inputs', 'args', 'shape', 'bytes', 'placement', 'module'];
  var diffCache = {};
  function diffOf(i) {
    if (diffCache[i]) return diffCache[i];
    var res = { added: [], removed: [], changed: new Map(), addedSet: new Set(), removedSet: new Set() };
    if (i > 0 && baseIndex(i) !== baseIndex(i - 1)) {
      var a = snapshot(i - 1), b = snapshot(i);
      b.byName.forEach(function (rid, name) {
        var old = a.byName.get(name);
        if (old === undefined) { res.added.push(name); res.addedSet.add(name); return; }
        if (old === rid) return;
        var ra = RECORDS[old], rb = RECORDS[rid], f = [];
        for (var k = 0; k < DIFF_FIELDS.length; k++) {
          var key = DIFF_FIELDS[k];
          if (JSON.stringify(ra[key]) !== JSON.stringify(rb[key])) f.push(key);
        }
        if (f.length) res.changed.set(name, f);
      });
      a.byName.forEach(function (rid, name) { if (!b.byName.has(name)) { res.removed.push(name); res.removedSet.add(name); } });
    }
    return (diffCache[i] = res);
  }

  // ------------------------------------------------------------------ state
  var S = {
    cur: 0, diff: false, expanded: new Set(), selected: null, panelOpen: false,
    matches: [], matchIdx: -1, query: '', view: { k: 1, tx: 0, ty: 0 }, graph: null,
    stats: { loadMs: 0, layoutMs: 0, drawMs: 0, items: 0, edges: 0, crossings: 0, crossingsInitial: 0 }
  };

  /* Module tree of a snapshot: children (sub-modules) and node counts per module path. */
  function moduleTree(snap) {
    if (snap.tree) return snap.tree;
    var kids = new Map(), direct = new Map(), total = new Map();
    kids.set('', new Set());
    for (var k = 0; k < snap.ids.length; k++) {
      var rec = RECORDS[snap.ids[k]], pre = prefixes(moduleOf(snap, rec)), parent = '';
      for (var j = 0; j < pre.length; j++) {
        if (!kids.has(parent)) kids.set(parent, new Set());
        kids.get(parent).add(pre[j]);
        total.set(pre[j], (total.get(pre[j]) || 0) + 1);
        parent = pre[j];
      }
      direct.set(parent, (direct.get(parent) || 0) + 1);
    }
    return (snap.tree = { kids: kids, direct: direct, total: total });
  }
  /* Expand modules breadth-first, biggest first, while the visible box count stays within BUDGET. */
  function autoExpand() {
    var tree = moduleTree(snapshot(S.cur)), exp = new Set();
    var visible = (tree.direct.get('') || 0) + (tree.kids.get('') ? tree.kids.get('').size : 0);
    var frontier = Array.from(tree.kids.get('') || []);
    while (frontier.length) {
      frontier.sort(function (a, b) { return (tree.total.get(b) || 0) - (tree.total.get(a) || 0); });
      var next = [];
      for (var i = 0; i < frontier.length; i++) {
        var p = frontier[i], ch = tree.kids.get(p), grow = (tree.direct.get(p) || 0) + (ch ? ch.size : 0) - 1;
        if (visible + grow <= BUDGET) {
          exp.add(p); visible += grow;
          if (ch) ch.forEach(function (c) { next.push(c); });
        }
      }
      frontier = next;
    }
    S.expanded = exp;
  }

  // ------------------------------------------------------------------ visible graph
  function repKey(snap, rec, cache) {
    var mod = moduleOf(snap, rec);
    var hit = cache.get(mod);
    if (hit === undefined) {
      hit = null;
      var pre = prefixes(mod);
      for (var i = 0; i < pre.length; i++) if (!S.expanded.has(pre[i])) { hit = 'g:' + pre[i]; break; }
      cache.set(mod, hit);
    }
    return hit || 'n:' + rec.name;
  }
  function buildGraph() {
    var snap = snapshot(S.cur), d = S.diff ? diffOf(S.cur) : null, prev = d && S.cur > 0 ? snapshot(S.cur - 1) : null;
    var items = new Map(), cache = new Map(), prevCache = new Map(), order = [];
    function item(key, rec, pos) {
      var it = items.get(key);
      if (!it) {
        it = { key: key, group: key.charAt(0) === 'g', name: key.slice(2), rec: null, count: 0, place: {},
               add: 0, rem: 0, chg: 0, status: null, pos: pos, ins: [], outs: [] };
        items.set(key, it); order.push(it);
      }
      if (!it.group) it.rec = rec;
      return it;
    }
    var recs = [];
    for (var k = 0; k < snap.ids.length; k++) recs.push([RECORDS[snap.ids[k]], snap, cache, k]);
    if (prev) {
      for (k = 0; k < prev.ids.length; k++) {
        var pr = RECORDS[prev.ids[k]];
        if (d.removedSet.has(pr.name)) recs.push([pr, prev, prevCache, (snap.order.get((pr.inputs || [])[0]) || k) + 0.5]);
      }
    }
    var keyOf = new Map();
    for (k = 0; k < recs.length; k++) {
      var rec = recs[k][0], key = repKey(recs[k][1], rec, recs[k][2]), it = item(key, rec, recs[k][3]);
      keyOf.set(rec.name, key);
      var status = d ? (d.addedSet.has(rec.name) ? 'add' : d.removedSet.has(rec.name) ? 'rem' : d.changed.has(rec.name) ? 'chg' : null) : null;
      if (status === 'rem') it.rem++; else { it.count++; var pl = rec.placement || 'none'; it.place[pl] = (it.place[pl] || 0) + 1; }
      if (status === 'add') it.add++; else if (status === 'chg') it.chg++;
      if (!it.group) it.status = status;
      it.pos = Math.min(it.pos, recs[k][3]);
    }
    var edges = new Map();
    for (k = 0; k < recs.length; k++) {
      rec = recs[k][0];
      var dst = keyOf.get(rec.name), ins = rec.inputs || [], removed = d && d.removedSet.has(rec.name);
      var oldIns = null;
      if (d && !removed && d.changed.has(rec.name)) { var o = prev.byName.get(rec.name); oldIns = o === undefined ? null : RECORDS[o].inputs || []; }
      for (var j = 0; j < ins.length; j++) {
        var src = keyOf.get(ins[j]);
        if (src === undefined || src === dst) continue;
        var srcRec = (recs[k][1].byName.has(ins[j]) ? RECORDS[recs[k][1].byName.get(ins[j])] : null);
        var ek = src + '\u0000' + dst, e = edges.get(ek);
        if (!e) { e = { src: src, dst: dst, count: 0, bytes: 0, label: '', status: null }; edges.set(ek, e); }
        e.count++; e.bytes += srcRec ? num(srcRec.bytes) : 0;
        if (srcRec && e.count === 1) e.label = srcRec.shape || '';
        var st = removed || (d && d.removedSet.has(ins[j])) ? 'rem' : (d && (d.addedSet.has(rec.name) || d.addedSet.has(ins[j]) || (oldIns && oldIns.indexOf(ins[j]) < 0))) ? 'add' : null;
        if (st === 'rem' && e.status !== 'add') e.status = 'rem';
        else if (st === 'add') e.status = 'add';
      }
    }
    var list = order.slice().sort(function (a, b) { return a.pos - b.pos; });
    var elist = Array.from(edges.values());
    list.forEach(function (it, i) { it.i = i; });
    elist.forEach(function (e) { e.s = items.get(e.src); e.t = items.get(e.dst); e.s.outs.push(e); e.t.ins.push(e); });
    return { items: list, byKey: items, edges: elist };
  }

  // ------------------------------------------------------------------ layout
  function measure(it) {
    ctx.font = 'bold 12px system-ui, sans-serif';
    var l1 = it.group ? (it.name + '  (' + it.count + ')') : it.name;
    var w1 = ctx.measureText(l1).width;
    ctx.font = '11px system-ui, sans-serif';
    var l2 = it.group ? groupLine2(it) : nodeLine2(it.rec);
    var w2 = ctx.measureText(l2).width;
    it.l1 = l1; it.l2 = l2;
    it.w = Math.min(300, Math.max(70, Math.max(w1, w2) + (it.group ? 34 : 16)));
    it.h = it.group ? GROUP_H : NODE_H;
  }
  function groupLine2(it) {
    var s = 'module';
    if (it.add || it.rem || it.chg) s += '  +' + it.add + ' −' + it.rem + ' ~' + it.chg;
    return s;
  }
  function nodeLine2(rec) { return shortTarget(rec) + (rec.shape ? '  ' + rec.shape : ''); }

  function countCrossings(layers, pos) {
    var total = 0;
    for (var l = 0; l + 1 < layers.length; l++) {
      var pairs = [];
      var L = layers[l];
      for (var i = 0; i < L.length; i++) {
        var v = L[i];
        for (var j = 0; j < v.down.length; j++) pairs.push(pos[v.id] * 1e6 + pos[v.down[j]]);
      }
      if (pairs.length < 2) continue;
      pairs.sort(function (a, b) { return a - b; });
      var n = layers[l + 1].length, tree = new Float64Array(n + 1);
      for (i = pairs.length - 1; i >= 0; i--) {   // count pairs (later source, smaller target) = inversions
        var t = pairs[i] % 1e6;
        for (var q = t; q > 0; q -= q & -q) total += tree[q];  // targets < t among later sources
        for (q = t + 1; q <= n; q += q & -q) tree[q]++;
      }
    }
    return total;
  }
  function layout(g) {
    var t0 = performance.now();
    var items = g.items, n = items.length;
    items.forEach(measure);
    // cycle-free orientation: follow the FX order of the items (edges against it are reversed)
    var layer = new Int32Array(n), hasIn = new Uint8Array(n), hasOut = new Uint8Array(n);
    var fwd = [];
    g.edges.forEach(function (e) {
      var a = e.s.i, b = e.t.i;
      if (a === b) return;
      e.rev = a > b;
      fwd.push(e.rev ? [b, a, e] : [a, b, e]);
    });
    var preds = items.map(function () { return []; }), succs = items.map(function () { return []; });
    fwd.forEach(function (f) { preds[f[1]].push(f[0]); succs[f[0]].push(f[1]); hasIn[f[1]] = 1; hasOut[f[0]] = 1; });
    for (var v = 0; v < n; v++) { var m = 0; for (var j = 0; j < preds[v].length; j++) m = Math.max(m, layer[preds[v][j]] + 1); layer[v] = m; }
    for (v = n - 1; v >= 0; v--) {   // pull sources (weights, inputs) down next to their first user
      if (!hasIn[v] && hasOut[v]) { var mn = 1e9; for (j = 0; j < succs[v].length; j++) mn = Math.min(mn, layer[succs[v][j]]); layer[v] = Math.max(0, mn - 1); }
    }
    var nl = 0; for (v = 0; v < n; v++) nl = Math.max(nl, layer[v] + 1);
    // virtual graph: real items + dummies on long edges
    var V = [];
    for (v = 0; v < n; v++) V.push({ id: v, it: items[v], layer: layer[v], up: [], down: [], w: items[v].w });
    fwd.forEach(function (f) {
      var a = f[0], b = f[1], e = f[2], chain = [a];
      for (var l = layer[a] + 1; l < layer[b]; l++) {
        var dv = { id: V.length, it: null, layer: l, up: [], down: [], w: 12 };
        V.push(dv); chain.push(dv.id);
      }
      chain.push(b);
      for (var c = 0; c + 1 < chain.length; c++) { V[chain[c]].down.push(chain[c + 1]); V[chain[c + 1]].up.push(chain[c]); }
      e.chain = e.rev ? chain.slice().reverse() : chain;
    });
    var layers = []; for (var l = 0; l < nl; l++) layers.push([]);
    V.forEach(function (x) { layers[x.layer].push(x); });
    var pos = new Float64Array(V.length);
    function renumber() { for (var l = 0; l < layers.length; l++) for (var i = 0; i < layers[l].length; i++) pos[layers[l][i].id] = i; }
    // initial order: DFS from the roots in FX order, so chains stay together
    var seen = new Uint8Array(V.length), rank = new Float64Array(V.length), counter = 0;
    function dfs(s) {
      var stack = [s];
      while (stack.length) {
        var x = stack.pop();
        if (seen[x]) continue;
        seen[x] = 1; rank[x] = counter++;
        var d = V[x].down; for (var k = d.length - 1; k >= 0; k--) if (!seen[d[k]]) stack.push(d[k]);
      }
    }
    for (v = 0; v < V.length; v++) if (!V[v].up.length) dfs(v);
    for (v = 0; v < V.length; v++) if (!seen[v]) dfs(v);
    layers.forEach(function (L) { L.sort(function (a, b) { return rank[a.id] - rank[b.id]; }); });
    renumber();
    var best = countCrossings(layers, pos), initial = best, bestOrder = layers.map(function (L) { return L.slice(); });
    var budgetMs = 400, iter = 0, stale = 0;   // ordering sweeps stop after 400 ms
    function sweep(down) {
      var from = down ? 1 : layers.length - 2, to = down ? layers.length : -1, step = down ? 1 : -1;
      for (var l = from; l !== to; l += step) {
        var L = layers[l];
        for (var i = 0; i < L.length; i++) {
          var nb = down ? L[i].up : L[i].down;
          if (nb.length) { var s = 0; for (var k = 0; k < nb.length; k++) s += pos[nb[k]]; L[i].bc = s / nb.length; } else L[i].bc = pos[L[i].id];
        }
        L.sort(function (a, b) { return a.bc - b.bc || pos[a.id] - pos[b.id]; });
        for (i = 0; i < L.length; i++) pos[L[i].id] = i;
      }
    }
    while (best > 0 && iter < 24 && stale < 4 && performance.now() - t0 < budgetMs) {
      sweep(iter % 2 === 0); iter++;
      var c = countCrossings(layers, pos);
      if (c < best) { best = c; bestOrder = layers.map(function (L) { return L.slice(); }); stale = 0; } else stale++;
    }
    layers = bestOrder; renumber();
    // x placement: isotonic regression (pool adjacent violators) of the desired centers under spacing
    var X = new Float64Array(V.length);
    layers.forEach(function (L) { var x = 0; for (var i = 0; i < L.length; i++) { X[L[i].id] = x + L[i].w / 2; x += L[i].w + X_GAP; } });
    function place(L, desired) {
      var m = L.length, off = new Float64Array(m), y = new Float64Array(m);
      for (var i = 1; i < m; i++) off[i] = off[i - 1] + (L[i - 1].w + L[i].w) / 2 + X_GAP;
      for (i = 0; i < m; i++) y[i] = desired[i] - off[i];
      var val = [], wt = [], cnt = [];
      for (i = 0; i < m; i++) {
        val.push(y[i]); wt.push(1); cnt.push(1);
        while (val.length > 1 && val[val.length - 2] > val[val.length - 1]) {
          var b = val.pop(), wb = wt.pop(), cb = cnt.pop(), a = val.pop(), wa = wt.pop(), ca = cnt.pop();
          val.push((a * wa + b * wb) / (wa + wb)); wt.push(wa + wb); cnt.push(ca + cb);
        }
      }
      var idx = 0;
      for (var bI = 0; bI < val.length; bI++) for (var q = 0; q < cnt[bI]; q++, idx++) X[L[idx].id] = val[bI] + off[idx];
    }
    for (var round = 0; round < 6; round++) {
      var down = round % 2 === 0;
      var from = down ? 1 : layers.length - 2, to = down ? layers.length : -1, step = down ? 1 : -1;
      for (l = from; l !== to; l += step) {
        var L = layers[l], des = new Float64Array(L.length);
        for (var i = 0; i < L.length; i++) {
          var nb = down ? L[i].up : L[i].down, other = down ? L[i].down : L[i].up;
          var all = round >= 4 ? nb.concat(other) : nb;
          if (all.length) { var s = 0; for (var k = 0; k < all.length; k++) s += X[all[k]]; des[i] = s / all.length; } else des[i] = X[L[i].id];
        }
        place(L, des);
      }
    }
    var minX = Infinity, maxX = -Infinity;
    V.forEach(function (x) { minX = Math.min(minX, X[x.id] - x.w / 2); maxX = Math.max(maxX, X[x.id] + x.w / 2); });
    items.forEach(function (it, i) { it.x = X[i] - minX; it.y = layer[i] * LAYER_GAP; });
    g.points = function (e) {
      return e.chain.map(function (id) { return { x: X[id] - minX, y: V[id].layer * LAYER_GAP, real: id < n, it: id < n ? items[id] : null }; });
    };
    g.width = maxX - minX; g.height = nl * LAYER_GAP;
    g.edges.forEach(function (e) { if (e.chain) e.pts = g.points(e); });
    S.stats.layoutMs = Math.round(performance.now() - t0);
    S.stats.crossings = best; S.stats.crossingsInitial = initial; S.stats.dummies = V.length - n; S.stats.sweeps = iter;
  }

  // ------------------------------------------------------------------ drawing
  var dpr = window.devicePixelRatio || 1;
  function resize() {
    var r = canvas.getBoundingClientRect();
    dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(r.width * dpr)); canvas.height = Math.max(1, Math.round(r.height * dpr));
    draw();
  }
  function fill(it) {
    var keys = Object.keys(it.place);
    if (!keys.length) return COLORS.none;
    keys.sort(function (a, b) { return it.place[b] - it.place[a]; });
    return colorOf(keys[0]);
  }
  var accelOrder = [];
  function colorOf(p) {
    if (!p || p === 'none') return COLORS.none;
    if (COLORS[p]) return COLORS[p];
    var i = accelOrder.indexOf(p); if (i < 0) { accelOrder.push(p); i = accelOrder.length - 1; }
    return ACCEL[i % ACCEL.length];
  }
  function roundRect(x, y, w, h, r) {
    ctx.beginPath(); ctx.moveTo(x + r, y); ctx.lineTo(x + w - r, y); ctx.quadraticCurveTo(x + w, y, x + w, y + r);
    ctx.lineTo(x + w, y + h - r); ctx.quadraticCurveTo(x + w, y + h, x + w - r, y + h); ctx.lineTo(x + r, y + h);
    ctx.quadraticCurveTo(x, y + h, x, y + h - r); ctx.lineTo(x, y + r); ctx.quadraticCurveTo(x, y, x + r, y); ctx.closePath();
  }
  function edgeLabel(e) {
    if (e.s.group || e.t.group || e.count > 1) return e.count + (e.count > 1 ? ' tensors · ' : ' tensor · ') + bytes(e.bytes);
    return (e.label ? e.label + ' · ' : '') + bytes(e.bytes);
  }
  function draw() {
    var t0 = performance.now(), g = S.graph;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!g) return;
    var v = S.view, k = v.k;
    ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * v.tx, dpr * v.ty);
    var W = canvas.width / dpr, H = canvas.height / dpr;
    var x0 = -v.tx / k - 40, y0 = -v.ty / k - 40, x1 = (W - v.tx) / k + 40, y1 = (H - v.ty) / k + 40;
    var diff = S.diff, sel = S.selected;
    // edges
    ctx.lineWidth = 1.2 / Math.max(k, 0.3);
    var labels = [];
    for (var i = 0; i < g.edges.length; i++) {
      var e = g.edges[i], p = e.pts;
      if (!p) continue;
      var ax = Math.min(p[0].x, p[p.length - 1].x), bx = Math.max(p[0].x, p[p.length - 1].x);
      for (var q = 1; q < p.length - 1; q++) { ax = Math.min(ax, p[q].x); bx = Math.max(bx, p[q].x); }
      var ay = Math.min(p[0].y, p[p.length - 1].y), by = Math.max(p[0].y, p[p.length - 1].y);
      if (bx < x0 || ax > x1 || by < y0 || ay > y1) continue;
      var hot = sel && (e.src === sel || e.dst === sel);
      ctx.strokeStyle = e.status ? DIFF[e.status] : hot ? '#1d4ed8' : diff ? 'rgba(90,100,115,.35)' : 'rgba(90,100,115,.7)';
      ctx.setLineDash(e.status === 'rem' ? [5, 4] : []);
      ctx.lineWidth = (hot || e.status ? 2 : 1.2) / Math.max(k, 0.3);
      ctx.beginPath();
      var sx = p[0].x, sy = p[0].y + e.s.h / 2, tx, ty;
      ctx.moveTo(sx, sy);
      for (q = 1; q < p.length; q++) {
        tx = p[q].x; ty = p[q].real ? p[q].y - p[q].it.h / 2 : p[q].y;
        var my = (sy + ty) / 2;
        ctx.bezierCurveTo(sx, my, tx, my, tx, ty);
        sx = tx; sy = ty;
      }
      ctx.stroke();
      // arrow head
      ctx.beginPath(); ctx.moveTo(tx, ty); ctx.lineTo(tx - 4, ty - 7); ctx.lineTo(tx + 4, ty - 7); ctx.closePath();
      ctx.fillStyle = ctx.strokeStyle; ctx.fill();
      if (k >= 0.65) {
        var a = p[p.length - 2], b = p[p.length - 1];
        var ly = (a.real ? a.y + a.it.h / 2 : a.y) * 0.45 + (b.y - b.it.h / 2) * 0.55;
        labels.push([edgeLabel(e), (a.x + b.x) / 2, ly, e.status]);
      }
    }
    ctx.setLineDash([]);
    // label backgrounds + text
    if (labels.length) {
      ctx.font = '10px system-ui, sans-serif'; ctx.textAlign = 'center'; ctx.textBaseline = 'middle';
      var placed = [];
      for (i = 0; i < labels.length; i++) {
        var L = labels[i], tw = ctx.measureText(L[0]).width, clash = false;
        for (var pI = 0; pI < placed.length && !clash; pI++) {   // greedy: skip a label that would overlap one drawn
          var P = placed[pI];
          clash = Math.abs(P[0] - L[1]) < (P[2] + tw) / 2 + 3 && Math.abs(P[1] - L[2]) < 12;
        }
        if (clash) continue;
        placed.push([L[1], L[2], tw]);
        ctx.fillStyle = 'rgba(251,252,253,.92)'; ctx.fillRect(L[1] - tw / 2 - 2, L[2] - 6, tw + 4, 12);
        ctx.fillStyle = L[3] ? DIFF[L[3]] : '#4a5361'; ctx.fillText(L[0], L[1], L[2]);
      }
    }
    // nodes
    for (i = 0; i < g.items.length; i++) {
      var it = g.items[i], x = it.x - it.w / 2, y = it.y - it.h / 2;
      if (x > x1 || x + it.w < x0 || y > y1 || y + it.h < y0) continue;
      var st = it.group ? ((it.add || it.rem || it.chg) ? (it.add ? 'add' : it.rem ? 'rem' : 'chg') : null) : it.status;
      ctx.globalAlpha = diff && !st ? 0.45 : 1;
      roundRect(x, y, it.w, it.h, it.group ? 7 : 4);
      ctx.fillStyle = it.status === 'rem' ? '#fff5f4' : fill(it); ctx.fill();
      if (it.group) {   // placement mix bar
        var keys = Object.keys(it.place), tot = it.count || 1, bx0 = x + 4;
        for (var kk = 0; kk < keys.length; kk++) {
          var w = (it.w - 8) * it.place[keys[kk]] / tot;
          ctx.fillStyle = keys[kk] === 'none' ? '#c8ced8' : keys[kk] === 'cpu' ? '#6f9fe8' : '#e8955a';
          if (keys[kk] !== 'none' && keys[kk] !== 'cpu') ctx.fillStyle = ['#e8955a', '#4caf64', '#9b6fe0'][accelOrder.indexOf(keys[kk]) % 3] || '#e8955a';
          ctx.fillRect(bx0, y + it.h - 6, w, 3); bx0 += w;
        }
      }
      ctx.lineWidth = (it.key === sel ? 3 : st ? 2.5 : it.group ? 1.5 : 1) / Math.max(k, 0.5);
      ctx.strokeStyle = it.key === sel ? '#1d4ed8' : st ? DIFF[st] : it.group ? '#7a8494' : '#9aa3b0';
      ctx.setLineDash(it.status === 'rem' ? [5, 3] : it.group ? [] : []);
      ctx.stroke(); ctx.setLineDash([]);
      if (it.group && k >= 0.2) {   // stacked look + expand glyph
        ctx.strokeStyle = '#a3abb8'; ctx.lineWidth = 1 / Math.max(k, 0.5);
        ctx.beginPath(); ctx.moveTo(x + 4, y - 3); ctx.lineTo(x + it.w - 4, y - 3); ctx.stroke();
      }
      if (k >= 0.35) {
        ctx.fillStyle = '#1d2430'; ctx.textAlign = 'left'; ctx.textBaseline = 'middle';
        ctx.font = 'bold 12px system-ui, sans-serif';
        var tx0 = x + (it.group ? 22 : 8);
        ctx.save(); ctx.beginPath(); ctx.rect(x, y, it.w - 2, it.h); ctx.clip();
        ctx.fillText(it.l1, tx0, y + 12);
        ctx.font = '11px system-ui, sans-serif'; ctx.fillStyle = '#4a5361';
        ctx.fillText(it.l2, tx0, y + 26);
        if (it.group) { ctx.font = 'bold 14px system-ui, sans-serif'; ctx.fillStyle = '#1d4ed8'; ctx.fillText('+', x + 7, y + it.h / 2 - 1); }
        ctx.restore();
      }
    }
    ctx.globalAlpha = 1;
    S.stats.drawMs = Math.round(performance.now() - t0);
  }

  // ------------------------------------------------------------------ view
  /* Fit the graph (in diff mode: the boxes the pass touched) to the window; never below a zoom where labels
     stop being drawn: a wide graph is then shown from its top, centred on the part fitted. */
  function fit() {
    var g = S.graph; if (!g) return;
    var r = canvas.getBoundingClientRect(), W = r.width || 800, H = r.height || 600;
    var box = { x0: 0, y0: 0, x1: g.width, y1: g.height };
    if (S.diff) {
      var hot = g.items.filter(function (it) { return it.status || it.add || it.rem || it.chg; });
      if (hot.length) {
        box = { x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity };
        hot.forEach(function (it) {
          box.x0 = Math.min(box.x0, it.x - it.w / 2); box.x1 = Math.max(box.x1, it.x + it.w / 2);
          box.y0 = Math.min(box.y0, it.y - it.h / 2); box.y1 = Math.max(box.y1, it.y + it.h / 2);
        });
      }
    }
    var bw = Math.max(box.x1 - box.x0, 1), bh = Math.max(box.y1 - box.y0, 1);
    var k = Math.min((W - 40) / bw, (H - 40) / bh, 1.2);
    k = Math.max(k, 0.5);
    S.view.k = k;
    S.view.tx = W / 2 - (box.x0 + bw / 2) * k;
    S.view.ty = bh * k <= H - 40 ? H / 2 - (box.y0 + bh / 2) * k : 30 - box.y0 * k;
    draw();
  }
  function centerOn(it, k) {
    var r = canvas.getBoundingClientRect();
    if (k) S.view.k = k;
    S.view.tx = r.width / 2 - it.x * S.view.k; S.view.ty = r.height / 2 - it.y * S.view.k;
    draw();
  }
  function zoomAt(f, sx, sy) {
    var v = S.view, k = Math.min(4, Math.max(0.02, v.k * f));
    v.tx = sx - (sx - v.tx) * k / v.k; v.ty = sy - (sy - v.ty) * k / v.k; v.k = k; draw();
  }
  function rebuild(keepView) {
    S.graph = buildGraph();
    layout(S.graph);
    S.stats.items = S.graph.items.length; S.stats.edges = S.graph.edges.length;
    S.stats.groups = S.graph.items.filter(function (x) { return x.group; }).length;
    if (!keepView) fit(); else draw();
    renderStatus(); renderModules();
  }
  function hit(sx, sy) {
    var v = S.view, wx = (sx - v.tx) / v.k, wy = (sy - v.ty) / v.k, g = S.graph;
    if (!g) return null;
    for (var i = g.items.length - 1; i >= 0; i--) {
      var it = g.items[i];
      if (Math.abs(wx - it.x) <= it.w / 2 && Math.abs(wy - it.y) <= it.h / 2) return it;
    }
    return null;
  }

  // ------------------------------------------------------------------ panels
  function reportFor(i) { return i > 0 ? REPORTS[i - 1] || null : null; }
  function nodeLink(name) { return '<a class="node" data-node="' + esc(name) + '">' + esc(name) + '</a>'; }
  function renderTimeline() {
    var html = '';
    for (var i = 0; i < SNAPS.length; i++) {
      var s = SNAPS[i], n = snapshot(i).ids.length, same = s.nodes === undefined;
      var prevN = i > 0 ? snapshot(i - 1).ids.length : n, dn = n - prevN;
      var sub = same ? 'no change' : n + ' nodes' + (i > 0 && dn ? ' (' + (dn > 0 ? '+' : '−') + Math.abs(dn) + ')' : '');
      var rep = reportFor(i), title = rep ? (rep.spec || rep.name) : s.pass;
      html += '<button class="pass' + (same ? ' same' : '') + (i === S.cur ? ' current' : '') + '" data-index="' + i +
        '" title="' + esc(title) + '" aria-pressed="' + (i === S.cur) + '">' + i + ' · ' + esc(s.pass) + '<small>' + sub + '</small></button>';
    }
    $('timeline').innerHTML = html;
  }
  function renderPassInfo() {
    var i = S.cur, s = SNAPS[i], rep = reportFor(i), snap = snapshot(i), h = '';
    h += '<h3>after <span id="pass-name">' + esc(s.pass) + '</span> <span class="muted">(snapshot ' + i + ' of ' + (SNAPS.length - 1) + ')</span></h3><dl>';
    var fl = 0, by = 0, placed = {};
    snap.ids.forEach(function (id) { var r = RECORDS[id]; if (r.cost) fl += num(r.cost.flops); var p = r.placement || 'unplaced'; placed[p] = (placed[p] || 0) + 1; });
    h += '<dt>nodes</dt><dd>' + snap.ids.length + '</dd><dt>FLOPs</dt><dd>' + human(fl) + '</dd>';
    h += '<dt>placement</dt><dd>' + Object.keys(placed).map(function (p) { return esc(p) + ' ' + placed[p]; }).join(', ') + '</dd>';
    if (rep) {
      h += '<dt>pass</dt><dd class="mono">' + esc(rep.spec || rep.name) + '</dd>';
      h += '<dt>status</dt><dd>' + esc(rep.status || '') + (rep.modified ? ', changed the graph' : ', no change') + '</dd>';
      h += '<dt>nodes</dt><dd>' + esc(rep.nodes_before) + ' → ' + esc(rep.nodes_after) + '</dd>';
      h += '<dt>FLOPs</dt><dd>' + human(rep.flops_before) + ' → ' + human(rep.flops_after) + '</dd>';
      h += '<dt>bytes</dt><dd>' + bytes(rep.bytes_before) + ' → ' + bytes(rep.bytes_after) + '</dd>';
      h += '<dt>time</dt><dd>' + (typeof rep.seconds === 'number' ? (rep.seconds * 1000).toFixed(1) + ' ms' : '-') + '</dd>';
      h += '<dt>verified</dt><dd>' + esc(rep.verified) + '</dd>';
      var det = rep.details || {};
      Object.keys(det).forEach(function (key) {
        var val = det[key];
        if (val && typeof val === 'object') val = JSON.stringify(val);
        h += '<dt>' + esc(key) + '</dt><dd class="mono">' + esc(val) + '</dd>';
      });
    }
    h += '</dl>';
    if (rep && rep.notes && rep.notes.length) h += '<ul class="notes">' + rep.notes.map(function (x) { return '<li>' + esc(x) + '</li>'; }).join('') + '</ul>';
    $('pass-info').innerHTML = h;
  }
  function renderDiffInfo() {
    var el = $('diff-info');
    if (!S.diff) { el.innerHTML = S.cur > 0 ? '<p class="muted">Press <kbd>d</kbd> for what this pass added, removed and changed.</p>' : ''; return; }
    if (S.cur === 0) { el.innerHTML = '<p class="muted">The captured graph has no previous snapshot: nothing to diff.</p>'; return; }
    var d = diffOf(S.cur), changed = Array.from(d.changed.keys());
    function list(cls, names, extra) {
      var shown = names.slice(0, 400);
      return '<ul class="list ' + cls + '-list" id="diff-' + cls + '">' + shown.map(function (n) {
        return '<li data-node="' + esc(n) + '" class="' + cls + '">' + esc(n) + (extra ? ' <span class="muted">' + esc(extra(n)) + '</span>' : '') + '</li>';
      }).join('') + (names.length > shown.length ? '<li class="muted">… ' + (names.length - shown.length) + ' more</li>' : '') + '</ul>';
    }
    var h = '<h3>diff vs ' + esc(SNAPS[S.cur - 1].pass) + ': <span class="badge added" id="count-added">+' + d.added.length +
      '</span> <span class="badge removed" id="count-removed">−' + d.removed.length + '</span> <span class="badge changed" id="count-changed">~' + changed.length + '</span></h3>';
    var cur = snapshot(S.cur), prev = snapshot(S.cur - 1);
    h += '<h3 class="added">added (' + d.added.length + ')</h3>' + list('added', d.added, function (n) { return shortTarget(RECORDS[cur.byName.get(n)]); });
    h += '<h3 class="removed">removed (' + d.removed.length + ')</h3>' + list('removed', d.removed, function (n) { return shortTarget(RECORDS[prev.byName.get(n)]); });
    h += '<h3 class="changed">changed (' + changed.length + ')</h3>' + list('changed', changed, function (n) { return d.changed.get(n).join(', '); });
    el.innerHTML = h;
  }
  function renderModules() {
    var ex = Array.from(S.expanded).sort();
    $('modules').innerHTML = '<h3>expanded modules (' + ex.length + ')</h3>' + (ex.length ? '<ul class="list">' + ex.slice(0, 300).map(function (p) {
      return '<li data-collapse="' + esc(p) + '" title="click to collapse">− ' + esc(p) + '</li>';
    }).join('') + '</ul>' : '<p class="muted">none: click a module box to expand it</p>');
  }
  function renderResults() {
    var el = $('results');
    if (!S.query) { el.innerHTML = ''; $('search-count').textContent = ''; return; }
    $('search-count').textContent = S.matches.length ? (S.matchIdx + 1) + '/' + S.matches.length : 'no match';
    var cur = snapshot(S.cur);
    el.innerHTML = '<h3>matches for “' + esc(S.query) + '” (' + S.matches.length + ')</h3><ul class="list" id="match-list">' +
      S.matches.slice(0, 300).map(function (n, i) {
        var r = RECORDS[cur.byName.get(n)];
        return '<li data-match="' + i + '"' + (i === S.matchIdx ? ' class="current"' : '') + '>' + esc(n) + ' <span class="muted">' + esc(shortTarget(r)) + ' ' + esc(baseName(r.provenance && r.provenance.source)) + '</span></li>';
      }).join('') + '</ul>';
  }
  function renderLegend() {
    var seen = {};
    for (var i = 0; i < SNAPS.length; i++) snapshot(i).ids.forEach(function (id) { seen[RECORDS[id].placement || 'none'] = 1; });
    var h = Object.keys(seen).sort().map(function (p) {
      return '<span class="sw" style="background:' + colorOf(p) + '"></span>' + (p === 'none' ? 'unplaced' : esc(p) + (p === 'cpu' ? '' : ' (accelerator)'));
    }).join(' ');
    if (S.diff) h += ' &nbsp; <span class="added">■ added</span> <span class="removed">■ removed</span> <span class="changed">■ changed</span>';
    $('legend').innerHTML = h;
  }
  function renderStatus() {
    var st = S.stats;
    $('status').textContent = snapshot(S.cur).ids.length + ' nodes · ' + st.items + ' boxes (' + st.groups + ' modules) · ' + st.edges +
      ' edges · ' + st.crossings + ' crossings · layout ' + st.layoutMs + ' ms · loaded in ' + st.loadMs + ' ms';
  }
  function findRecord(name) {
    var cur = snapshot(S.cur);
    if (cur.byName.has(name)) return { rec: RECORDS[cur.byName.get(name)], snap: S.cur, here: true };
    if (S.diff && S.cur > 0 && snapshot(S.cur - 1).byName.has(name)) return { rec: RECORDS[snapshot(S.cur - 1).byName.get(name)], snap: S.cur - 1, here: true, removed: true };
    for (var i = S.cur - 1; i >= 0; i--) if (snapshot(i).byName.has(name)) return { rec: RECORDS[snapshot(i).byName.get(name)], snap: i, here: false };
    for (i = S.cur + 1; i < SNAPS.length; i++) if (snapshot(i).byName.has(name)) return { rec: RECORDS[snapshot(i).byName.get(name)], snap: i, here: false };
    return null;
  }
  function renderPanel() {
    var el = $('panel');
    if (!S.panelOpen || !S.selected) { el.hidden = true; return; }
    var key = S.selected, h = '';
    if (key.charAt(0) === 'g') {
      var it = S.graph && S.graph.byKey.get(key), path = key.slice(2);
      h = '<h2>module ' + esc(path) + '</h2><dl><dt>nodes</dt><dd>' + (it ? it.count : '?') + '</dd>';
      if (it) h += '<dt>placement</dt><dd>' + Object.keys(it.place).map(function (p) { return esc(p === 'none' ? 'unplaced' : p) + ' ' + it.place[p]; }).join(', ') + '</dd>';
      if (it && S.diff) h += '<dt>diff</dt><dd>+' + it.add + ' −' + it.rem + ' ~' + it.chg + '</dd>';
      h += '</dl><p><button data-expand="' + esc(path) + '">expand</button></p>';
    } else {
      var name = key.slice(2), f = findRecord(name);
      if (!f) { el.hidden = true; return; }
      var r = f.rec, pv = r.provenance || {}, cost = r.cost || {};
      var d = S.diff ? diffOf(S.cur) : null;
      var status = d ? (d.addedSet.has(name) ? 'added' : d.removedSet.has(name) ? 'removed' : d.changed.has(name) ? 'changed' : '') : '';
      h = '<h2 id="panel-name">' + esc(name) + (status ? ' <span class="badge ' + status + '">' + status + '</span>' : '') + '</h2>';
      if (!f.here) h += '<p class="muted">not in this snapshot; shown from snapshot ' + f.snap + ' (' + esc(SNAPS[f.snap].pass) + ') <a class="snap" data-snap="' + f.snap + '">go there</a></p>';
      h += '<dl>';
      h += '<dt>op</dt><dd class="mono">' + esc(r.op) + '</dd><dt>target</dt><dd class="mono">' + esc(r.target) + '</dd>';
      h += '<dt>args</dt><dd class="mono">' + esc(r.args) + '</dd>';
      h += '<dt>shape</dt><dd class="mono">' + esc(r.shape || '-') + '</dd>';
      h += '<dt>bytes</dt><dd>' + bytes(r.bytes) + (typeof r.bytes === 'number' ? ' (' + r.bytes.toLocaleString('en-US') + ')' : '') + '</dd>';
      h += '<dt>FLOPs</dt><dd>' + human(cost.flops) + (typeof cost.flops === 'number' ? ' (' + cost.flops.toLocaleString('en-US') + ')' : '') + (cost.exact === false ? ' (estimate)' : '') + '</dd>';
      h += '<dt>read / written</dt><dd>' + bytes(cost.bytes_read) + ' / ' + bytes(cost.bytes_written) + '</dd>';
      h += '<dt>placement</dt><dd>' + esc(r.placement || 'unplaced') + (r.placement_reason ? '<div class="muted" id="panel-placement-reason">' + esc(r.placement_reason) + '</div>' : '') + '</dd>';
      h += '<dt>module</dt><dd>' + (r.module ? '<a class="module" data-module="' + esc(r.module) + '" title="collapse">' + esc(r.module) + '</a>' : '<span class="muted">(top level)</span>') + '</dd>';
      h += '<dt>source</dt><dd class="mono" id="panel-source" title="' + esc(pv.source || '') + '">' + (pv.source ? esc(pv.source) : '<span class="muted">unknown (weights and inputs have none)</span>') + '</dd>';
      h += '<dt>created by</dt><dd id="panel-pass">' + esc(pv.pass || '?') + '</dd>';
      h += '<dt>derived from</dt><dd>' + (pv.origin ? nodeLink(pv.origin) : '<span class="muted">-</span>') + '</dd>';
      var sn = snapshot(f.snap);
      h += '<dt>inputs</dt><dd>' + ((r.inputs || []).map(nodeLink).join(', ') || '-') + '</dd>';
      h += '<dt>users</dt><dd>' + ((sn.users.get(name) || []).map(nodeLink).join(', ') || '-') + '</dd>';
      h += '</dl>';
      if (status === 'changed' && S.cur > 0) {
        var old = RECORDS[snapshot(S.cur - 1).byName.get(name)];
        h += '<h3 class="changed">changed by ' + esc(SNAPS[S.cur].pass) + '</h3><dl>';
        d.changed.get(name).forEach(function (fld) {
          h += '<dt>' + esc(fld) + '</dt><dd class="mono">' + esc(JSON.stringify(old[fld])) + ' → ' + esc(JSON.stringify(r[fld])) + '</dd>';
        });
        h += '</dl>';
      }
    }
    el.innerHTML = h; el.hidden = false;
  }
  function renderAll(keepView) {
    renderTimeline(); renderPassInfo(); renderDiffInfo(); renderLegend();
    rebuild(keepView); renderResults(); renderPanel();
  }

  // ------------------------------------------------------------------ actions
  function setPass(i) {
    i = Math.max(0, Math.min(SNAPS.length - 1, i));
    if (i === S.cur) return;
    S.cur = i;
    if (S.query) runSearch(S.query, true);
    renderAll(true);
  }
  function setDiff(on) { S.diff = !!on; $('diff').checked = S.diff; renderAll(true); }
  function expand(path) {
    prefixes(path).forEach(function (p) { S.expanded.add(p); });
    rebuild(true);
  }
  function collapse(path) {
    Array.from(S.expanded).forEach(function (p) { if (p === path || p.indexOf(path + '.') === 0) S.expanded.delete(p); });
    if (S.selected && S.selected.charAt(0) === 'n') S.selected = null;
    rebuild(true); renderPanel();
  }
  function expandAll() {
    var snap = snapshot(S.cur), tree = moduleTree(snap);
    if (snap.ids.length > EXPAND_ALL_LIMIT) {   // one more level only
      var more = [];
      tree.kids.forEach(function (ch, p) { if (p === '' || S.expanded.has(p)) ch.forEach(function (c) { if (!S.expanded.has(c)) more.push(c); }); });
      more.forEach(function (c) { S.expanded.add(c); });
    } else tree.total.forEach(function (_, p) { S.expanded.add(p); });
    rebuild(false);
  }
  function collapseAll() { S.expanded = new Set(); rebuild(false); }
  /* Make node `name` visible (expanding its modules), select it, center on it and open its panel. */
  function reveal(name, openPanel) {
    var f = findRecord(name);
    if (!f) return false;
    if (!f.here) { S.cur = f.snap; renderTimeline(); renderPassInfo(); renderDiffInfo(); }
    var snap = snapshot(f.snap), mod = moduleOf(snap, f.rec), need = prefixes(mod).some(function (p) { return !S.expanded.has(p); });
    prefixes(mod).forEach(function (p) { S.expanded.add(p); });
    if (need || !f.here) rebuild(true);
    S.selected = 'n:' + name;
    var it = S.graph.byKey.get(S.selected);
    if (it) centerOn(it, Math.max(S.view.k, 0.9));
    if (openPanel !== false) S.panelOpen = true;
    renderPanel(); draw();
    return true;
  }
  function runSearch(q, quiet) {
    S.query = q.trim();
    var ql = S.query.toLowerCase(), out = [];
    if (ql) {
      var snap = snapshot(S.cur);
      for (var k = 0; k < snap.ids.length; k++) {
        var r = RECORDS[snap.ids[k]], src = r.provenance && r.provenance.source || '';
        if (r.name.toLowerCase().indexOf(ql) >= 0 || String(r.target).toLowerCase().indexOf(ql) >= 0 ||
            r.op.toLowerCase().indexOf(ql) >= 0 || String(src).toLowerCase().indexOf(ql) >= 0 ||
            (r.module || '').toLowerCase().indexOf(ql) >= 0) out.push(r.name);
      }
    }
    S.matches = out; S.matchIdx = out.length ? 0 : -1;
    renderResults();
    if (!quiet && out.length) reveal(out[0]);
    return out.length;
  }
  function step(dir) {
    if (!S.matches.length) return;
    S.matchIdx = (S.matchIdx + dir + S.matches.length) % S.matches.length;
    renderResults(); reveal(S.matches[S.matchIdx]);
  }
  function selectNeighbour(up) {
    if (!S.selected || !S.graph) return;
    var it = S.graph.byKey.get(S.selected); if (!it) return;
    var es = up ? it.ins : it.outs; if (!es.length) return;
    var nxt = up ? es[0].s : es[0].t;
    S.selected = nxt.key; centerOn(nxt); renderPanel();
  }

  // ------------------------------------------------------------------ events
  $('timeline').addEventListener('click', function (ev) {
    var b = ev.target.closest('button[data-index]'); if (b) setPass(+b.dataset.index);
  });
  $('diff').addEventListener('change', function () { setDiff(this.checked); });
  $('fit').addEventListener('click', fit);
  $('expand-all').addEventListener('click', expandAll);
  $('collapse-all').addEventListener('click', collapseAll);
  $('help-button').addEventListener('click', function () { $('help').hidden = !$('help').hidden; });
  $('help').addEventListener('click', function () { $('help').hidden = true; });
  $('search').addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter') { ev.preventDefault(); if (this.value.trim() === S.query && S.matches.length) step(ev.shiftKey ? -1 : 1); else runSearch(this.value); }
    else if (ev.key === 'Escape') { this.blur(); canvas.focus(); }
  });
  document.addEventListener('click', function (ev) {
    var t = ev.target.closest('[data-node],[data-match],[data-collapse],[data-expand],[data-module],[data-snap]');
    if (!t || t.closest('#timeline')) return;
    if (t.dataset.node) reveal(t.dataset.node);
    else if (t.dataset.match !== undefined) { S.matchIdx = +t.dataset.match; renderResults(); reveal(S.matches[S.matchIdx]); }
    else if (t.dataset.collapse) collapse(t.dataset.collapse);
    else if (t.dataset.expand) { expand(t.dataset.expand); }
    else if (t.dataset.module) collapse(t.dataset.module);
    else if (t.dataset.snap) setPass(+t.dataset.snap);
  });
  var drag = null;
  canvas.addEventListener('mousedown', function (ev) { drag = { x: ev.clientX, y: ev.clientY, tx: S.view.tx, ty: S.view.ty, moved: false }; canvas.classList.add('dragging'); });
  window.addEventListener('mousemove', function (ev) {
    if (!drag) return;
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (drag.moved) { S.view.tx = drag.tx + dx; S.view.ty = drag.ty + dy; draw(); }
  });
  window.addEventListener('mouseup', function (ev) {
    if (!drag) return;
    var moved = drag.moved; drag = null; canvas.classList.remove('dragging');
    if (moved || ev.target !== canvas) return;
    var r = canvas.getBoundingClientRect(), it = hit(ev.clientX - r.left, ev.clientY - r.top);
    if (!it) { S.selected = null; S.panelOpen = false; renderPanel(); draw(); return; }
    if (it.group) { S.selected = null; expand(it.name); var first = S.graph.items.filter(function (x) { return x.rec && (x.rec.module === it.name || (x.rec.module || '').indexOf(it.name + '.') === 0) || x.name.indexOf(it.name + '.') === 0; })[0]; if (first) centerOn(first); return; }
    S.selected = it.key; S.panelOpen = true; renderPanel(); draw();
  });
  canvas.addEventListener('wheel', function (ev) {
    ev.preventDefault();
    var r = canvas.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  document.addEventListener('keydown', function (ev) {
    var typing = ev.target && (ev.target.tagName === 'INPUT' && ev.target.type !== 'checkbox');
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var r = canvas.getBoundingClientRect(), handled = true;
    switch (ev.key) {
      case 'ArrowLeft': setPass(S.cur - 1); break;
      case 'ArrowRight': setPass(S.cur + 1); break;
      case 'ArrowUp': selectNeighbour(true); break;
      case 'ArrowDown': selectNeighbour(false); break;
      case '/': $('search').focus(); $('search').select(); break;
      case 'n': step(1); break;
      case 'p': step(-1); break;
      case 'd': setDiff(!S.diff); break;
      case 'f': fit(); break;
      case 'x': expandAll(); break;
      case 'c': collapseAll(); break;
      case '+': case '=': zoomAt(1.25, r.width / 2, r.height / 2); break;
      case '-': zoomAt(0.8, r.width / 2, r.height / 2); break;
      case '?': $('help').hidden = !$('help').hidden; break;
      case 'Enter':
        if (S.selected && S.selected.charAt(0) === 'g') expand(S.selected.slice(2));
        else if (S.selected) { S.panelOpen = true; renderPanel(); }
        else if (S.matches.length) reveal(S.matches[Math.max(0, S.matchIdx)]);
        break;
      case 'Escape':
        if (!$('help').hidden) $('help').hidden = true; else { S.panelOpen = false; renderPanel(); }
        break;
      default: handled = false;
    }
    if (handled) ev.preventDefault();
  });
  window.addEventListener('resize', resize);

  // ------------------------------------------------------------------ start
  $('program').textContent = DATA.program || 'program';
  autoExpand();
  var r0 = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(r0.width * dpr)); canvas.height = Math.max(1, Math.round(r0.height * dpr));
  renderAll(false);
  S.stats.loadMs = Math.round(performance.now() - T_START);
  renderStatus();

  window.fxviz = {
    state: S, stats: S.stats, setPass: setPass, setDiff: setDiff, expand: expand, collapse: collapse,
    expandAll: expandAll, collapseAll: collapseAll, search: runSearch, reveal: reveal, fit: fit, diff: diffOf,
    /* screen position (CSS px, relative to the canvas) of a visible box, for tests; null if hidden */
    screenPos: function (key) {
      var it = S.graph && S.graph.byKey.get(key); if (!it) return null;
      return { x: it.x * S.view.k + S.view.tx, y: it.y * S.view.k + S.view.ty };
    },
    visibleKeys: function () { return S.graph ? S.graph.items.map(function (x) { return x.key; }) : []; },
    ready: true
  };
  document.body.setAttribute('data-ready', '1');
})();
