"""Synthetic pass traces of any size, written directly as JSON records (no model, no capture): for the
visualizer's scale tests and benchmark (``benchmarks/viz.py``).

``synthetic_trace(num_nodes)`` builds a transformer-like graph: an embedding, ``layers`` encoder layers of
attention + MLP sub-modules (each op with its weights, shapes, bytes, FLOPs, source line and module path),
and a head; then two snapshots after it: a pass that fuses every layer's q/k/v projections into one (nodes
removed and added) and a placement pass that puts every other layer on an accelerator.
"""
from __future__ import annotations

def _node(name, op, target, inputs, shape, nbytes, module, source, flops=0, pass_name="capture", origin=None,
          placement=None):
    return {"name": name, "op": op, "target": target, "inputs": list(inputs), "args": ", ".join(inputs),
            "shape": shape, "bytes": nbytes, "placement": placement, "module": module,
            "provenance": {"source": source, "module": module, "origin": origin, "pass": pass_name},
            "cost": {"flops": flops, "bytes_read": nbytes * max(1, len(inputs)), "bytes_written": nbytes,
                     "exact": True}}


_LAYER_OPS = 40  # nodes per encoder layer (see _layer)


def _layer(i: int, x: str, d: int) -> tuple[list[dict], str]:
    """The records of encoder layer ``i`` reading ``x``; returns (records, name of its output)."""
    recs: list[dict] = []
    act = f"f32[8, 128, {d}]"
    ab = 8 * 128 * d * 4
    src = "models/encoder.py:"

    def linear(mod, inp, tag, line):
        w = f"l{i}_{tag}_weight"
        b = f"l{i}_{tag}_bias"
        path = f"encoder.layers.{i}.{mod}"
        recs.append(_node(w, "get_attr", f"encoder.layers.{i}.{mod}.weight", [], f"f32[{d}, {d}]", d * d * 4, path, None))
        recs.append(_node(b, "get_attr", f"encoder.layers.{i}.{mod}.bias", [], f"f32[{d}]", d * 4, path, None))
        p = f"l{i}_{tag}_t"
        recs.append(_node(p, "call_function", "aten.permute.default", [w], f"f32[{d}, {d}]", d * d * 4, path, src + str(line)))
        o = f"l{i}_{tag}_mm"
        recs.append(_node(o, "call_function", "aten.addmm.default", [b, inp, p], act, ab, path, src + str(line),
                          flops=2 * 8 * 128 * d * d))
        return o

    ln = f"l{i}_ln1"
    recs.append(_node(ln, "call_function", "aten.native_layer_norm.default", [x], act, ab,
                      f"encoder.layers.{i}.ln1", src + "40", flops=5 * 8 * 128 * d))
    q = linear("attn.q", ln, "q", 41)
    k = linear("attn.k", ln, "k", 42)
    v = linear("attn.v", ln, "v", 43)
    att = f"l{i}_scores"
    recs.append(_node(att, "call_function", "aten.bmm.default", [q, k], "f32[8, 128, 128]", 8 * 128 * 128 * 4,
                      f"encoder.layers.{i}.attn", src + "44", flops=2 * 8 * 128 * 128 * d))
    sm = f"l{i}_softmax"
    recs.append(_node(sm, "call_function", "aten._softmax.default", [att], "f32[8, 128, 128]", 8 * 128 * 128 * 4,
                      f"encoder.layers.{i}.attn", src + "45"))
    ctxn = f"l{i}_ctx"
    recs.append(_node(ctxn, "call_function", "aten.bmm.default", [sm, v], act, ab, f"encoder.layers.{i}.attn",
                      src + "46", flops=2 * 8 * 128 * 128 * d))
    o = linear("attn.o", ctxn, "o", 47)
    r1 = f"l{i}_res1"
    recs.append(_node(r1, "call_function", "aten.add.Tensor", [x, o], act, ab, f"encoder.layers.{i}", src + "48"))
    ln2 = f"l{i}_ln2"
    recs.append(_node(ln2, "call_function", "aten.native_layer_norm.default", [r1], act, ab,
                      f"encoder.layers.{i}.ln2", src + "49"))
    h = linear("mlp.fc1", ln2, "fc1", 50)
    g = f"l{i}_gelu"
    recs.append(_node(g, "call_function", "aten.gelu.default", [h], act, ab, f"encoder.layers.{i}.mlp", src + "51"))
    h2 = linear("mlp.fc2", g, "fc2", 52)
    # pad with cheap elementwise ops so a layer has exactly _LAYER_OPS records
    cur = h2
    j = 0
    while len(recs) < _LAYER_OPS - 1:
        nxt = f"l{i}_scale{j}"
        recs.append(_node(nxt, "call_function", "aten.mul.Tensor", [cur], act, ab, f"encoder.layers.{i}.mlp",
                          src + "53"))
        cur, j = nxt, j + 1
    out = f"l{i}_out"
    recs.append(_node(out, "call_function", "aten.add.Tensor", [r1, cur], act, ab, f"encoder.layers.{i}", src + "54"))
    return recs, out


def synthetic_trace(num_nodes: int = 50_000, d: int = 64) -> dict:
    """An fxopt trace (dict, format ``fxopt-trace`` v1) with about ``num_nodes`` nodes in its capture
    snapshot (a multiple of the 40-node layer plus ~6 nodes), plus a ``fuse-qkv`` snapshot (every layer's
    q/k/v addmms replaced by one) and a ``split`` snapshot (odd layers placed on ``xla``)."""
    layers = max(1, (num_nodes - 6) // _LAYER_OPS)
    nodes = [_node("tokens", "placeholder", "tokens", [], "i64[8, 128]", 8 * 128 * 8, "", None),
             _node("embed_weight", "get_attr", "embed.weight", [], f"f32[32000, {d}]", 32000 * d * 4, "embed", None),
             _node("embedding", "call_function", "aten.embedding.default", ["embed_weight", "tokens"],
                   f"f32[8, 128, {d}]", 8 * 128 * d * 4, "embed", "models/encoder.py:30")]
    x = "embedding"
    for i in range(layers):
        recs, x = _layer(i, x, d)
        nodes.extend(recs)
    nodes.append(_node("head_mean", "call_function", "aten.mean.dim", [x], f"f32[8, {d}]", 8 * d * 4, "head",
                       "models/encoder.py:60"))
    nodes.append(_node("head_relu", "call_function", "aten.relu.default", ["head_mean"], f"f32[8, {d}]", 8 * d * 4,
                       "head", "models/encoder.py:61"))
    nodes.append(_node("output", "output", "output", ["head_relu"], "", 0, "", None))

    fused = []
    for rec in nodes:
        name = rec["name"]
        if name.endswith(("_q_mm", "_k_mm", "_v_mm")):
            i = name.split("_")[0]
            if name.endswith("_q_mm"):
                ln = rec["inputs"][1]
                path = rec["module"].rsplit(".", 1)[0]
                fused.append(_node(f"{i}_qkv_mm", "call_function", "aten.addmm.default", [ln], "f32[8, 128, 192]",
                                   8 * 128 * 192 * 4, path, rec["provenance"]["source"], flops=3 * rec["cost"]["flops"],
                                   pass_name="fuse-qkv", origin=name))
                for part, tag in enumerate("qkv"):
                    fused.append(_node(f"{i}_{tag}_split", "call_function", "aten.slice.Tensor", [f"{i}_qkv_mm"],
                                       f"f32[8, 128, {d}]", 8 * 128 * d * 4, path, rec["provenance"]["source"],
                                       pass_name="fuse-qkv", origin=f"{i}_{tag}_mm"))
            continue
        rec = dict(rec)
        rec["inputs"] = [f"{n[:-3]}_split" if n.endswith(("_q_mm", "_k_mm", "_v_mm")) else n for n in rec["inputs"]]
        fused.append(rec)
    placed = []
    for rec in fused:
        rec = dict(rec)
        layer = rec["name"].split("_")[0]
        odd = layer.startswith("l") and layer[1:].isdigit() and int(layer[1:]) % 2 == 1
        rec["placement"] = "xla" if odd and rec["op"] == "call_function" else "cpu"
        placed.append(rec)

    def report(i, name, before, after, details):
        return {"index": i, "name": name, "spec": name, "status": "ran", "modified": True,
                "nodes_before": len(before), "nodes_after": len(after), "flops_before": 0, "flops_after": 0,
                "bytes_before": 0, "bytes_after": 0, "seconds": 0.0, "verified": "ok", "details": details,
                "notes": ["synthetic trace (fxopt.tools.viz_synthetic)"]}

    return {"format": "fxopt-trace", "version": 1, "program": f"synthetic{len(nodes)}",
            "snapshots": [{"index": 0, "pass": "capture", "nodes": nodes},
                          {"index": 1, "pass": "fuse-qkv", "nodes": fused},
                          {"index": 2, "pass": "split", "nodes": placed}],
            "reports": [report(0, "fuse-qkv", nodes, fused, {"layers_fused": layers}),
                        report(1, "split", fused, placed, {"target": "xla"})]}
