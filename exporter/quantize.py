"""Integer (int8) variants of exported models, for CPUs with VNNI or AMX, verified against the float model.

musicnn spends ~60 % of its time in two front-end convolutions: one input channel, 204 filters of 7 x 38 and
7 x 67 over a (time x mel) image, each reduced by a max over frequency. On 2 cores these run at the fp32 peak
already (~330 GFLOP/s), so only narrower arithmetic can make them faster, and int8 matrix products run about
6x faster than fp32 on a CPU with AMX (1.9 TOP/s measured here) and ~3x with AVX-512 VNNI.

onnxruntime's static quantizer (QLinearConv) is not used: it re-quantises each convolution's output to 8 bits
before the max (tags moved by up to 0.009 on these two convolutions alone, 0.02 with the mid-end), and its
layout changes around each convolution take much of the gain back. This pass instead rewrites
``Conv(1 input channel) -> ReduceMax(frequency)`` as

    QuantizeLinear(x) -> Slice/Concat/Transpose (the time taps of each bin side by side; shared by branches
    with the same input) -> Gather (one patch per group of frequency positions) -> MatMulInteger (int32) ->
    ReduceMax over frequency (int32) -> Cast -> Mul(scale per filter) -> Add(bias)

Frequency positions are computed ``GROUP`` at a time: one patch spans the group's bins (``GROUP + kf - 1``
of them) and the weight matrix holds the filters at each of the group's offsets, zero elsewhere. The sums
are the same integers as position by position, but the gathered patches are ~6x smaller: building them
cost as much as the product itself (1.3 of 7.6 ms per musicnn window; 6.0 ms with groups of 8). When the
positions do not divide into groups, the last group overlaps the one before it, which the max ignores.

musicnn's temporal branches (51 one-bin filters of 128, 64 and 32 frames, the same for every mel bin, then
the max over bins) take the next ~27 % at batch 1 and are rewritten too, laid out the other way round: the input
time-major, one Gather of whole rows (``TIME_GROUP + k - 1`` frames of every bin) per group of ``TIME_GROUP``
time positions, ``MatMulInteger`` against the filters at each of the group's offsets, and the max over bins as a
reduction over an outer axis (see ``_rewrite_temporal``). In the frequency layout the patches would be gathered
byte by byte across bins, which cost more than the float convolutions: this is why they had stayed float.

The max is taken on the exact int32 sums before any scaling (max commutes with a positive scale and a
per-filter constant), so the only approximations are the 8-bit input (a range calibrated on real audio,
asymmetric, zero kept exact for the padding) and the 8-bit weights (symmetric, one scale per filter).

The FCNs spend ~40 % of a window in two 3 x 3 convolution blocks (64 -> 128 and 128 -> 128 channels, each
followed by ReLU and a max-pool) that also run at the fp32 peak. Each such ``Conv -> Relu -> MaxPool`` is
rewritten the same way: the input quantised once, laid out channels-last, padded with the zero point, one
Gather building every 3 x 3 patch (rows ordered so that the positions one pool cell covers sit next to each
other), ``MatMulInteger``, the max-pool taken on the int32 sums as a max over those rows, then scale, bias and
ReLU on the pooled values only (exact: ReLU and a positive scale commute with the max). Blocks with few input
channels or few positions (the FCN's first, fourth and fifth) stay float: narrow products, or too little work
to gain. The input is scaled by a Mul and quantised with scale 1 because onnxruntime's graph optimiser moves
a QuantizeLinear that directly follows a max-pool above it, and then pools 8-bit values in a slow plain
layout (14 against 1.3 ms per window).

Everything else in the graph stays float32.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from exporter.errors import ExporterError

INPUT_MARGIN = 0.05  # widen the calibrated input range by 5 % each side (see loudest_window)
GROUP = 8  # frequency positions per patch (4-12 measured within 3 % of each other at batch 1 and 4)
TIME_GROUP = 17  # time positions per patch of a one-bin temporal filter (11 and 17 measured alike; 187 = 11 x 17)
MIN_BLOCK_CHANNELS = 8  # a conv block is quantised only with this many input channels...
MIN_BLOCK_POSITIONS = 4096  # ...and this many output positions per window (see the module docstring)


class QuantizeError(ExporterError):
    """A model has nothing this pass can quantise, or its variant failed verification."""


@dataclass(frozen=True)
class FreqMaxSite:
    """One ``Conv -> ReduceMax`` pair the pass rewrites."""

    conv: onnx.NodeProto
    reduce: onnx.NodeProto
    freq_axis: int  # 3: input (B, 1, time, freq), kernel (time, freq); 2: input (B, 1, freq, time), kernel (freq, time)
    kernel_bins: int  # how many frequency bins the kernel spans (1: a temporal filter)

    @property
    def input(self) -> str:
        return self.conv.input[0]


@dataclass(frozen=True)
class BlockSite:
    """One ``Conv (odd kernel, 'same' padding) -> Relu -> MaxPool (stride = kernel)`` block the pass rewrites."""

    conv: onnx.NodeProto
    relu: onnx.NodeProto
    pool: onnx.NodeProto

    @property
    def input(self) -> str:
        return self.conv.input[0]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def loudest_window(width: int, rate: int) -> np.ndarray:
    """A full-scale 110 Hz square wave: every harmonic at full level, so the front end's largest values (a
    touch above full-scale sines and chirps, and above all real music measured) are inside the calibrated
    range, and loud masters are not clipped by the 8-bit input."""
    t = np.arange(width) / rate
    return np.sign(np.sin(2 * np.pi * 110.0 * t)).astype(np.float32)[None]


def find_sites(model: onnx.ModelProto, names: Sequence[str] | None = None) -> list[FreqMaxSite | BlockSite]:
    """Every site the pass rewrites: the frequency-max convolutions, then the convolution blocks."""
    return [*find_freq_max_sites(model, names), *find_block_sites(model, names)]


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _plain_convs(model: onnx.ModelProto, names: Sequence[str] | None
                 ) -> Iterator[tuple[onnx.NodeProto, list[int], dict, dict[str, list[onnx.NodeProto]]]]:
    """(node, weight dims, attributes, consumers) of every 2-D convolution both site kinds start from: constant
    4-D weights, no groups, unit strides and dilations (``names``, when given, restricts the nodes)."""
    inits = {i.name: i for i in model.graph.initializer}
    consumers = _consumers(model.graph)
    for n in model.graph.node:
        if n.op_type != "Conv" or (names is not None and n.name not in names) or n.input[1] not in inits:
            continue
        dims = list(inits[n.input[1]].dims)
        a = _attrs(n)
        if (len(dims) == 4 and a.get("group", 1) == 1 and all(s == 1 for s in a.get("strides", [1]))
                and all(d == 1 for d in a.get("dilations", [1]))):
            yield n, dims, a, consumers


def find_freq_max_sites(model: onnx.ModelProto, names: Sequence[str] | None = None) -> list[FreqMaxSite]:
    """Convolutions with one input channel, unit stride, no padding or dilation, spanning several frequency
    bins, whose only consumer is a ReduceMax over frequency (without keepdims): musicnn's timbral branches,
    in either layout (time x frequency for musicnn 0.1.0, frequency x time for the comparison's Musicnn)."""
    sites = []
    for n, dims, a, consumers in _plain_convs(model, names):
        if dims[1] != 1 or any(a.get("pads", [0])):
            continue
        users = consumers.get(n.output[0], [])
        if len(users) != 1 or users[0].op_type != "ReduceMax":
            continue
        ra = _attrs(users[0])
        axes = ra.get("axes")
        if axes not in ([2], [3], [-1]) or ra.get("keepdims", 1) != 0 or len(users[0].input) > 1:
            continue
        freq_axis = 2 if axes == [2] else 3
        sites.append(FreqMaxSite(n, users[0], freq_axis, int(dims[freq_axis])))
    return sites


def find_block_sites(model: onnx.ModelProto, names: Sequence[str] | None = None) -> list[BlockSite]:
    """``Conv -> Relu -> MaxPool`` blocks (odd kernel with 'same' padding, unit stride, a pool whose stride equals
    its kernel, nothing else reading the conv or the ReLU) with at least MIN_BLOCK_CHANNELS input channels;
    whether they have enough positions is known only from the calibration's shapes (see usable)."""
    sites = []
    for n, dims, a, consumers in _plain_convs(model, names):
        kh, kw = dims[2], dims[3]
        if (dims[1] < MIN_BLOCK_CHANNELS or kh % 2 == 0 or kw % 2 == 0
                or list(a.get("pads", [0, 0, 0, 0])) != [kh // 2, kw // 2, kh // 2, kw // 2]
                or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
            continue
        relu = consumers.get(n.output[0], [])
        if len(relu) != 1 or relu[0].op_type != "Relu":
            continue
        pool = consumers.get(relu[0].output[0], [])
        if len(pool) != 1 or pool[0].op_type != "MaxPool" or len(pool[0].output) != 1:
            continue
        pa = _attrs(pool[0])
        k = list(pa.get("kernel_shape", []))
        if (len(k) != 2 or list(pa.get("strides", k)) != k or any(pa.get("pads", [0])) or pa.get("ceil_mode", 0)
                or any(d != 1 for d in pa.get("dilations", [1])) or pa.get("storage_order", 0)):
            continue
        sites.append(BlockSite(n, relu[0], pool[0]))
    return sites


def input_ranges(model: onnx.ModelProto, sites: Sequence[FreqMaxSite | BlockSite], batches: Sequence[np.ndarray],
                 run: Callable[[bytes, np.ndarray, list[str]], list[np.ndarray]]) -> dict[str, InputRange]:
    """Each site's input over the calibration windows, from the float model itself: min, max, and its shape
    per window, which shape inference cannot always tell through the padding."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    wanted = sorted({s.input for s in sites})
    for name in wanted:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    blob = probe.SerializeToString()
    lo = dict.fromkeys(wanted, np.inf)
    hi = dict.fromkeys(wanted, -np.inf)
    shape: dict[str, tuple[int, ...]] = {}
    for batch in batches:
        for name, value in zip(wanted, run(blob, batch, wanted)):
            lo[name] = min(lo[name], float(value.min()))
            hi[name] = max(hi[name], float(value.max()))
            shape[name] = tuple(value.shape[1:])  # as stored; rewrite() orders it by the site's layout
    if not shape:
        raise QuantizeError("no calibration windows")
    return {n: InputRange(lo[n], hi[n], shape[n]) for n in wanted}


@dataclass(frozen=True)
class InputRange:
    low: float
    high: float
    shape: tuple[int, ...]  # per window: (1, time, freq) or (1, freq, time), padding included, for a
    # frequency-max site; (channels, height, width) for a block


def usable(sites: Sequence[FreqMaxSite | BlockSite], ranges: dict[str, InputRange]) -> list[FreqMaxSite | BlockSite]:
    """The sites worth rewriting once their input sizes are known: blocks need MIN_BLOCK_POSITIONS."""
    return [s for s in sites if not isinstance(s, BlockSite)
            or ranges[s.input].shape[1] * ranges[s.input].shape[2] >= MIN_BLOCK_POSITIONS]


def _safe(name: str) -> str:
    return name.strip("/").replace("/", "_")


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _u8_params(lo: float, hi: float) -> tuple[float, int]:
    span = hi - lo
    lo, hi = min(lo - INPUT_MARGIN * span, 0.0), max(hi + INPUT_MARGIN * span, 0.0)  # 0 must be exact
    scale = (hi - lo) / 255.0
    return scale, int(np.clip(round(-lo / scale), 0, 255))


def _int8_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights, one scale per output channel (axis 0)."""
    scale = np.maximum(np.abs(w).reshape(len(w), -1).max(1), 1e-30) / 127.0
    q = np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8)
    return scale, q


def _rewrite_block(s: BlockSite, inits: dict[str, onnx.TensorProto], r: InputRange,
                   new_inits: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """The nodes computing one conv block in int8 (module docstring); they write the pool's output."""
    p = _safe(s.conv.name) + "_int8"
    w = numpy_helper.to_array(inits[s.conv.input[1]]).astype(np.float64)
    o, c, kh, kw = w.shape
    has_bias = len(s.conv.input) > 2 and s.conv.input[2]
    bias = numpy_helper.to_array(inits[s.conv.input[2]]).astype(np.float64) if has_bias else np.zeros(o)
    _, h, wd = r.shape
    ph, pw = _attrs(s.pool)["kernel_shape"]
    hp, wp = h // ph, wd // pw  # pooled size (floor: positions no pool cell covers are never computed)
    x_scale, zp = _u8_params(r.low, r.high)
    w_scale, wq = _int8_weights(w)
    # Patch rows in (pooled row, pooled column, row in cell, column in cell) order, so each pool cell's
    # positions are adjacent; each row holds the (dy, dx, channel) taps around its position, read from the
    # channels-last input padded by kh//2, kw//2 and flattened to (rows x columns, channels).
    y, x, cy, cx, dy, dx = np.meshgrid(np.arange(hp), np.arange(wp), np.arange(ph), np.arange(pw),
                                       np.arange(kh), np.arange(kw), indexing="ij")
    idx = ((y * ph + cy + dy) * (wd + kw - 1) + (x * pw + cx + dx)).reshape(hp * wp * ph * pw, kh * kw)
    new_inits += [numpy_helper.from_array(np.array(1.0 / x_scale, np.float32), p + "_inv_scale"),
                  numpy_helper.from_array(np.array(1.0, np.float32), p + "_one"),
                  numpy_helper.from_array(np.array(zp, np.uint8), p + "_zp"),
                  _i64(p + "_pads", [0, kh // 2, kw // 2, 0, 0, kh // 2, kw // 2, 0]),
                  _i64(p + "_flat", [0, (h + kh - 1) * (wd + kw - 1), c]),
                  numpy_helper.from_array(idx.astype(np.int64), p + "_patch_idx"),
                  _i64(p + "_rows_shape", [0, hp * wp * ph * pw, kh * kw * c]),
                  numpy_helper.from_array(wq.transpose(2, 3, 1, 0).reshape(kh * kw * c, o).copy(), p + "_w"),
                  numpy_helper.from_array(np.array(0, np.int8), p + "_w_zp"),
                  _i64(p + "_cells", [0, hp * wp, ph * pw, o]),
                  _i64(p + "_pooled", [0, hp, wp, o]),
                  numpy_helper.from_array((x_scale * w_scale).astype(np.float32), p + "_scale"),
                  numpy_helper.from_array(bias.astype(np.float32), p + "_bias")]
    node = helper.make_node
    return [
        node("Mul", [s.input, p + "_inv_scale"], [p + "_scaled_in"], name=p + "_prescale"),
        node("QuantizeLinear", [p + "_scaled_in", p + "_one", p + "_zp"], [p + "_q"], name=p + "_quant"),
        node("Transpose", [p + "_q"], [p + "_nhwc"], name=p + "_to_nhwc", perm=[0, 2, 3, 1]),
        node("Pad", [p + "_nhwc", p + "_pads", p + "_zp"], [p + "_padded"], name=p + "_pad"),
        node("Reshape", [p + "_padded", p + "_flat"], [p + "_flat_in"], name=p + "_flatten"),
        node("Gather", [p + "_flat_in", p + "_patch_idx"], [p + "_patches"], name=p + "_gather", axis=1),
        node("Reshape", [p + "_patches", p + "_rows_shape"], [p + "_rows"], name=p + "_reshape"),
        node("MatMulInteger", [p + "_rows", p + "_w", p + "_zp", p + "_w_zp"], [p + "_acc"], name=p + "_matmul"),
        node("Reshape", [p + "_acc", p + "_cells"], [p + "_acc_cells"], name=p + "_to_cells"),
        node("ReduceMax", [p + "_acc_cells"], [p + "_max"], name=p + "_pool", axes=[2], keepdims=0),
        node("Reshape", [p + "_max", p + "_pooled"], [p + "_max_grid"], name=p + "_to_grid"),
        node("Cast", [p + "_max_grid"], [p + "_maxf"], name=p + "_cast", to=TensorProto.FLOAT),
        node("Mul", [p + "_maxf", p + "_scale"], [p + "_rescaled"], name=p + "_mul"),
        node("Add", [p + "_rescaled", p + "_bias"], [p + "_biased"], name=p + "_add"),
        node("Relu", [p + "_biased"], [p + "_relu"], name=p + "_relu"),
        node("Transpose", [p + "_relu"], [s.pool.output[0]], name=p + "_to_nchw", perm=[0, 3, 1, 2]),
    ]


def _is_temporal(site: FreqMaxSite | BlockSite) -> bool:
    """A one-bin filter over time (a temporal branch), not a filter spanning frequency bins or a block."""
    return isinstance(site, FreqMaxSite) and site.kernel_bins == 1


def _rewrite_temporal(s: FreqMaxSite, inits: dict[str, onnx.TensorProto], r: InputRange,
                      new_inits: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """A one-bin filter over time (musicnn's temporal branches: 51 filters of 128, 64 and 32 frames, each bin of
    the spectrogram filtered alike, then the max over bins), with its own quantised input.

    Time positions are computed ``TIME_GROUP`` at a time, laid out so that every copy is of whole rows: the
    input is put time-major (time, batch x bins), one Gather along time takes each group's ``TIME_GROUP + k - 1``
    frames as rows of all bins, a transpose makes each (group, bin) one row of frames, and the weight matrix
    holds each filter at each of the group's offsets. The max over bins is then a reduction over an outer axis
    of rows ``TIME_GROUP x filters`` wide. Gathering single bytes across bins (the frequency layout) cost more
    than the float convolution; this way the three branches take 1.8 against 5.0 ms per window, one thread."""
    conv, red = s.conv, s.reduce
    p = _safe(conv.name) + "_int8"
    x = s.input
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    frames, n_freq = r.shape[-2:]
    if s.freq_axis == 2:
        w = w.transpose(0, 1, 3, 2)
        frames, n_freq = n_freq, frames
    c, _, k, _ = w.shape
    t_out = frames - k + 1
    group = min(TIME_GROUP, t_out)
    n_groups = -(-t_out // group)
    extra = n_groups * group - t_out  # frames of zero point appended so the last group is whole
    span = group + k - 1
    scale, zp = _u8_params(r.low, r.high)
    bias = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and conv.input[2]
            else np.zeros(c))
    w_scale, wq = _int8_weights(w)
    taps = wq[:, 0, :, 0]  # (C, k)
    wide = np.zeros((span, group, c), np.int8)  # rows: frame in the patch; columns: (position in group, filter)
    for j in range(group):
        wide[j:j + k, j, :] = taps.T
    idx = (np.arange(n_groups)[:, None] * group + np.arange(span)[None, :]).astype(np.int64)
    new_inits += [numpy_helper.from_array(np.array(scale, np.float32), p + "_x_scale"),
                  numpy_helper.from_array(np.array(zp, np.uint8), p + "_x_zp"),
                  _i64(p + "_axis1", [1]),
                  numpy_helper.from_array(idx, p + "_idx"),
                  _i64(p + "_rows_shape", [0, 0, -1]),
                  numpy_helper.from_array(wide.reshape(span, group * c), p + "_w"),
                  numpy_helper.from_array(np.array(0, np.int8), p + "_w_zp"),
                  _i64(p + "_acc_shape", [0, -1, n_freq, group * c]),
                  _i64(p + "_out_shape", [0, 0, group, c]),
                  _i64(p + "_time_shape", [0, n_groups * group, c]),
                  _i64(p + "_t0", [0]), _i64(p + "_t1", [t_out]),
                  numpy_helper.from_array((scale * w_scale).astype(np.float32), p + "_scale"),
                  numpy_helper.from_array(bias.astype(np.float32), p + "_bias")]
    nodes = [helper.make_node("QuantizeLinear", [x, p + "_x_scale", p + "_x_zp"], [p + "_q"], name=p + "_quant"),
             helper.make_node("Squeeze", [p + "_q", p + "_axis1"], [p + "_sq"], name=p + "_squeeze"),
             # (B, T, F) or (B, F, T) -> (T, B, F)
             helper.make_node("Transpose", [p + "_sq"], [p + "_tbf"], name=p + "_time_major",
                              perm=[1, 0, 2] if s.freq_axis == 3 else [2, 0, 1])]
    src = p + "_tbf"
    if extra:
        new_inits.append(_i64(p + "_pads", [0, 0, 0, extra, 0, 0]))
        nodes.append(helper.make_node("Pad", [src, p + "_pads", p + "_x_zp"], [p + "_padded"], name=p + "_pad",
                                      mode="constant"))
        src = p + "_padded"
    nodes += [
        helper.make_node("Gather", [src, p + "_idx"], [p + "_g"], name=p + "_gather", axis=0),  # (G, span, B, F)
        helper.make_node("Reshape", [p + "_g", p + "_rows_shape"], [p + "_gr"], name=p + "_flat"),  # (G, span, BF)
        helper.make_node("Transpose", [p + "_gr"], [p + "_rows"], name=p + "_rows_t", perm=[0, 2, 1]),  # (G, BF, span)
        helper.make_node("MatMulInteger", [p + "_rows", p + "_w", p + "_x_zp", p + "_w_zp"], [p + "_acc"],
                         name=p + "_matmul"),  # (G, BF, group x C)
        helper.make_node("Reshape", [p + "_acc", p + "_acc_shape"], [p + "_acc4"], name=p + "_by_bin"),
        helper.make_node("ReduceMax", [p + "_acc4"], [p + "_max"], name=p + "_reduce", axes=[2], keepdims=0),
        helper.make_node("Reshape", [p + "_max", p + "_out_shape"], [p + "_max4"], name=p + "_split"),  # (G, B, g, C)
        helper.make_node("Transpose", [p + "_max4"], [p + "_bt"], name=p + "_batch_major", perm=[1, 0, 2, 3]),
        helper.make_node("Reshape", [p + "_bt", p + "_time_shape"], [p + "_btc"], name=p + "_join"),  # (B, T', C)
        helper.make_node("Slice", [p + "_btc", p + "_t0", p + "_t1", p + "_axis1"], [p + "_cut"], name=p + "_cut"),
        helper.make_node("Cast", [p + "_cut"], [p + "_f"], name=p + "_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "_f", p + "_scale"], [p + "_scaled"], name=p + "_mul"),
        helper.make_node("Add", [p + "_scaled", p + "_bias"], [p + "_biased"], name=p + "_add"),
        helper.make_node("Transpose", [p + "_biased"], [red.output[0]], name=p + "_transpose", perm=[0, 2, 1]),
    ]
    return nodes


def rewrite(model: onnx.ModelProto, sites: Sequence[FreqMaxSite | BlockSite],
            ranges: dict[str, InputRange]) -> onnx.ModelProto:
    """A copy of ``model`` with every site computed in int8 as the module docstring describes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    taps_of: dict[tuple[str, int], tuple[str, float]] = {}
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # conv name -> replacement nodes
    new_inits: list[onnx.TensorProto] = []
    for s in sites:
        if isinstance(s, BlockSite):
            new_nodes[s.conv.name] = _rewrite_block(s, inits, ranges[s.input], new_inits)
            continue
        conv, red = s.conv, s.reduce
        if _is_temporal(s):
            new_nodes[conv.name] = _rewrite_temporal(s, inits, ranges[s.input], new_inits)
            continue
        p = _safe(conv.name) + "_int8"
        nodes: list[onnx.NodeProto] = []
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        x = s.input
        frames, n_freq = ranges[x].shape[-2:]
        if s.freq_axis == 2:  # frequency x time: handled as time x frequency
            w = w.transpose(0, 1, 3, 2)
            frames, n_freq = n_freq, frames
        c, _, kt, kf = w.shape  # (C, 1, taps in time, bins in frequency)
        t_out, fo = frames - kt + 1, n_freq - kf + 1
        key = (x, kt)
        if key not in taps_of:  # branches with the same input and time taps share the quantised taps
            q = f"{_safe(x)}_u8_{kt}"
            scale, zp = _u8_params(ranges[x].low, ranges[x].high)
            new_inits += [numpy_helper.from_array(np.array(scale, np.float32), q + "_scale"),
                          numpy_helper.from_array(np.array(zp, np.uint8), q + "_zp"),
                          _i64(q + "_axis1", [1]), _i64(q + "_shape", [0, kt, t_out, n_freq])]
            nodes += [helper.make_node("QuantizeLinear", [x, q + "_scale", q + "_zp"], [q + "_q"], name=q + "_quant"),
                      helper.make_node("Squeeze", [q + "_q", q + "_axis1"], [q + "_x" if s.freq_axis == 3 else q + "_ft"],
                                       name=q + "_squeeze")]
            if s.freq_axis == 2:
                nodes.append(helper.make_node("Transpose", [q + "_ft"], [q + "_x"], name=q + "_to_time_freq", perm=[0, 2, 1]))
            # (B, T + kt - 1, F) -> the kt time-shifted copies (B, kt, T, F) -> (B, T, F, kt): each
            # frequency bin's taps side by side, so one Gather of whole tap rows builds the patches.
            parts = []
            for dt in range(kt):
                names = [f"{q}_t{dt}_start", f"{q}_t{dt}_end", q + "_axis1"]
                new_inits += [_i64(names[0], [dt]), _i64(names[1], [dt + t_out])]
                nodes.append(helper.make_node("Slice", [q + "_x", *names], [f"{q}_tap{dt}"], name=f"{q}_slice{dt}"))
                parts.append(f"{q}_tap{dt}")
            nodes += [helper.make_node("Concat", parts, [q + "_taps"], name=q + "_concat", axis=1),
                      helper.make_node("Reshape", [q + "_taps", q + "_shape"], [q + "_tapsr"], name=q + "_reshape"),
                      helper.make_node("Transpose", [q + "_tapsr"], [q + "_rows"], name=q + "_transpose",
                                       perm=[0, 2, 3, 1])]
            taps_of[key] = (q, scale)
        q, x_scale = taps_of[key]
        q_zp = q + "_zp"
        bias = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and conv.input[2]
                else np.zeros(c))
        w_scale, wq = _int8_weights(w)
        wq = wq[:, 0]  # (C, kt, kf)
        group = min(GROUP, fo)
        starts = list(range(0, fo - group + 1, group))
        if starts[-1] != fo - group:
            starts.append(fo - group)  # overlaps the group before it: the max over frequency does not mind
        span = group + kf - 1  # bins one group's patch covers
        idx = (np.array(starts)[:, None] + np.arange(span)[None, :]).astype(np.int64)
        # rows ordered (bin in the patch, tap) like the gathered patches; columns (position in group, filter)
        wide = np.zeros((span, kt, group, c), np.int8)
        for j in range(group):
            wide[j:j + kf, :, j, :] = wq.transpose(2, 1, 0)
        new_inits += [numpy_helper.from_array(idx, p + "_patch_idx"),
                      numpy_helper.from_array(wide.reshape(span * kt, group * c), p + "_w"),
                      numpy_helper.from_array(np.array(0, np.int8), p + "_w_zp"),
                      numpy_helper.from_array((x_scale * w_scale).astype(np.float32), p + "_scale"),
                      numpy_helper.from_array(bias.astype(np.float32), p + "_bias"),
                      _i64(p + "_shape", [0, 0, len(starts), span * kt]),
                      _i64(p + "_acc_shape", [0, 0, len(starts) * group, c])]
        nodes += [
            helper.make_node("Gather", [q + "_rows", p + "_patch_idx"], [p + "_patches"], name=p + "_gather", axis=2),
            helper.make_node("Reshape", [p + "_patches", p + "_shape"], [p + "_rows"], name=p + "_reshape"),
            helper.make_node("MatMulInteger", [p + "_rows", p + "_w", q_zp, p + "_w_zp"],
                             [p + "_acc_grouped"], name=p + "_matmul"),
            helper.make_node("Reshape", [p + "_acc_grouped", p + "_acc_shape"], [p + "_acc"], name=p + "_ungroup"),
            helper.make_node("ReduceMax", [p + "_acc"], [p + "_max"], name=p + "_reduce", axes=[2], keepdims=0),
            helper.make_node("Cast", [p + "_max"], [p + "_maxf"], name=p + "_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [p + "_maxf", p + "_scale"], [p + "_scaled"], name=p + "_mul"),
            helper.make_node("Add", [p + "_scaled", p + "_bias"], [p + "_biased"], name=p + "_add"),
            helper.make_node("Transpose", [p + "_biased"], [red.output[0]], name=p + "_transpose", perm=[0, 2, 1]),
        ]
        new_nodes[conv.name] = nodes
    dropped = {n.name for s in sites
               for n in ((s.conv, s.relu, s.pool) if isinstance(s, BlockSite) else (s.conv, s.reduce))}
    kept = []
    for n in g.node:
        if n.name in new_nodes:
            kept += new_nodes[n.name]
        if n.name not in dropped:
            kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live + new_inits)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 13 for o in out.opset_import):
        raise QuantizeError("the pass needs ONNX opset 13 or later")
    onnx.checker.check_model(out)
    return out



from tagger.models.session import INT8_CPU_FLAGS, VARIANT_KEY, sha256_file  # noqa: E402  (the runtime's contract)

TAG_TOLERANCE = 0.01


@dataclass
class Verification:
    """How the int8 variant compares with the float model, song by song."""

    files: int = 0
    windows: int = 0
    max_tag_diff: float = 0.0
    min_embedding_cosine: float = 1.0
    top5_changed: list[str] = field(default_factory=list)
    top5_near_ties: list[str] = field(default_factory=list)  # differed only among float near-ties

    def passed(self) -> bool:
        return self.max_tag_diff <= TAG_TOLERANCE and not self.top5_changed

    def as_dict(self) -> dict:
        return {"files": self.files, "windows": self.windows, "max_tag_diff": round(self.max_tag_diff, 5),
                "min_embedding_cosine": round(self.min_embedding_cosine, 6), "top5_changed": self.top5_changed,
                "top5_same_but_near_ties": self.top5_near_ties, "tag_tolerance": TAG_TOLERANCE}


def compare_song(name: str, ref: tuple[np.ndarray, np.ndarray], var: tuple[np.ndarray, np.ndarray],
                 v: Verification) -> None:
    """Fold one song's window outputs (tags, embedding) from both models into ``v`` (song level: the mean)."""
    rt, vt = ref[0].mean(0), var[0].mean(0)
    re_, ve = ref[1].mean(0), var[1].mean(0)
    v.files += 1
    v.windows += len(ref[0])
    v.max_tag_diff = max(v.max_tag_diff, float(np.abs(rt - vt).max()))
    cos = float(re_ @ ve / max(np.linalg.norm(re_) * np.linalg.norm(ve), 1e-30))
    v.min_embedding_cosine = min(v.min_embedding_cosine, cos)
    top_r, top_v = list(np.argsort(-rt)[:5]), list(np.argsort(-vt)[:5])
    if top_r == top_v:
        return
    # Differences are accepted only between near-ties of the float model itself: labels entering or leaving
    # the five must score within the tolerance of its fifth, and reordered ones within it of each other.
    fifth = rt[top_r[4]]
    moved_in_out = set(top_r) ^ set(top_v)
    reordered = [(a, b) for a, b in zip(top_r, top_v) if a != b and a in top_v and b in top_r]
    if (all(abs(rt[i] - fifth) <= TAG_TOLERANCE for i in moved_in_out)
            and all(abs(rt[a] - rt[b]) <= TAG_TOLERANCE for a, b in reordered)):
        v.top5_near_ties.append(name)
    else:
        v.top5_changed.append(name)


def build_int8_variant(source: Path, output: Path, calibration: Sequence[np.ndarray],
                       verify: Sequence[tuple[str, np.ndarray]], *, threads: int = 2) -> Verification:
    """Write ``output``: ``source`` with its front-end convolutions in int8, only if it passes verification.

    ``calibration`` holds window batches (the model's input) for the input ranges; ``verify`` holds
    (name, windows of one song). The variant carries the float model's card unchanged plus a
    ``tagger.variant`` entry: precision, the float file's sha256 (the runtime uses a variant only beside the
    exact file it was made from), the CPU features it needs and these verification figures.
    """
    import onnxruntime as ort

    def session(blob: bytes | str) -> "ort.InferenceSession":
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])

    model = onnx.load(str(source))
    input_name = model.graph.input[0].name
    sites = find_sites(model)
    if not sites:
        raise QuantizeError(f"{source}: nothing to quantise (no convolution with one input channel reduced by a max "
                            "over frequency, no convolution block with enough channels)")
    ranges = input_ranges(model, sites, calibration,
                          lambda blob, batch, names: session(blob).run(names, {input_name: batch}))
    sites = usable(sites, ranges)
    if not sites:
        raise QuantizeError(f"{source}: nothing worth quantising (every convolution block has under "
                            f"{MIN_BLOCK_POSITIONS} positions)")
    ref = session(str(source))
    outputs = [o.name for o in model.graph.output][:2]
    # The whole rewrite first; where it misses the bar, the same without the temporal filters (each adds its own
    # 8-bit input and weights: musicnn-mtt's moved a tag by 0.015 with them, within the bar without).
    temporal = [st for st in sites if _is_temporal(st)]
    tries = [sites] + ([[st for st in sites if not _is_temporal(st)]] if temporal and len(temporal) < len(sites) else [])
    failures = []
    for chosen in tries:
        variant = rewrite(model, chosen, ranges)
        var = session(variant.SerializeToString())
        v = Verification()
        for name, windows in verify:
            parts = [(ref.run(outputs, {input_name: windows[i:i + 8]}),
                      var.run(outputs, {input_name: windows[i:i + 8]})) for i in range(0, len(windows), 8)]
            compare_song(name, tuple(np.concatenate([p[0][k] for p in parts]) for k in range(2)),
                         tuple(np.concatenate([p[1][k] for p in parts]) for k in range(2)), v)
        if not v.files:
            raise QuantizeError("nothing to verify the variant on")
        if v.passed():
            sites = chosen
            break
        which = ("with" if any(map(_is_temporal, chosen)) else "without") + " the temporal filters: " if len(tries) > 1 else ""
        failures.append(which + json.dumps(v.as_dict()))
    else:
        raise QuantizeError(f"{source}: the int8 variant misses the bar (tags within {TAG_TOLERANCE}, the same top 5): "
                            + "; ".join(failures))
    entry = variant.metadata_props.add()
    entry.key = VARIANT_KEY
    entry.value = json.dumps({"precision": "int8", "reference_sha256": sha256_file(source),
                              "cpu_flags_any": list(INT8_CPU_FLAGS), "quantised": [s.conv.name for s in sites],
                              "input_ranges": {k: [r.low, r.high] for k, r in ranges.items()},
                              "verification": v.as_dict()}, sort_keys=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        onnx.save(variant, tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide an installed model from other users
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return v
