// Recomputation (activation checkpointing) for training graphs. Owns: choosing which forward activations the
// backward pass reads again from a recomputed copy instead of keeping them alive from the forward pass, and
// rewriting the backward schedule so the copies are computed just before their first backward reader.
// Promises: forward nodes are untouched (same results, same running-statistics updates); recomputed nodes are
// deterministic copies (batch_norm in training re-applied with the batch statistics the forward pass saved), so
// gradients equal the plain schedule's up to float rounding.
#pragma once
#include <string>
#include <vector>

#include <cnnnative/cnnnative.hpp>

namespace cnn {

enum class Recompute { none, cheap, segments };
// "none" | "cheap" | "segments" (also "off" / "auto"-free spellings are rejected with the list).
Recompute parse_recompute(const std::string& s);

struct RecomputeResult {
  int num_cloned_nodes = 0;  // recompute nodes added to the backward schedule
  int num_checkpoints = 0;   // forward activations kept for backward as segment boundaries (segments mode)
};

// g: forward nodes [0, nf), then the backward nodes autodiff appended. keep: values that must stay as they are
// (fetched outputs, the loss). Backward nodes keep their relative order; recompute nodes are inserted before
// the first backward node that reads them.
//  cheap:    a value made by an elementwise/normalization op (relu, sigmoid, tanh, leaky_relu, add,
//            batch_norm, reshape, flatten) with one forward reader is recomputed from its inputs, recursively
//            through such values; convolutions, linear layers and pooling keep their outputs.
//  segments: the forward schedule is cut where a single activation carries everything later layers need
//            (ResNet block outputs, the layers of a plain chain); a cut is kept when the stretch since the last
//            kept cut contains an expensive op (convolution, linear, pooling, ...), and everything between
//            kept cuts is recomputed - one extra forward pass over those stretches, bounded live memory.
//            A stretch holding more than a quarter of the saved bytes (no cuts, as in U-Net's skip
//            connections) falls back to the cheap rule inside it.
RecomputeResult recompute_pass(Graph& g, int nf, Recompute mode, const std::vector<int>& keep);

}  // namespace cnn
