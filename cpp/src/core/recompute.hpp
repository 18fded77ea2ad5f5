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

enum class Recompute { none, cheap, lean, segments };

// A recompute choice. lean: the cheap rule, plus (1) costly nodes (convolutions, pooling) whose rerun costs at
// most `max_flops_per_byte` floating-point operations per byte of output they free (ResNet's stem and 1x1
// expansions at 56x56: large outputs from few input channels), and (2) values with several forward readers
// (ResNet block outputs) when recomputing them needs no other such value recomputed (every other block output
// is kept: a rerun never cascades through a stage).
struct RecomputePolicy {
  Recompute mode = Recompute::none;
  double max_flops_per_byte = 0;
};

// lean's default threshold: 80 flops per byte of output freed, i.e. 1x1 convolutions from up to 160 channels
// (2 x 160 multiply-adds per 4-byte element), a 7x7 stem over 3 channels (73.5), pooling. ResNet-50 b16: arena
// 501 MiB (1,296 with "none") at 1.03-1.08x the step time; 32: 648 MiB, 64: 550, 128: 354 at 1.05-1.15x
// (bench/RESULTS.md, "Lean training memory by default").
constexpr double kLeanFlopsPerByte = 80;

// "none" | "cheap" | "lean" | "lean:<flops per byte>" | "segments"; "auto" is "lean" for training sessions and
// "none" for gradient sessions (mode_train); compile_plan makes a training "auto" "cheap" instead where that
// plans a smaller arena. Anything else is an Error listing the spellings.
RecomputePolicy parse_recompute(const std::string& s, bool mode_train);
// "none", "cheap", "lean", "lean:64", "segments": the spelling parse_recompute reads back.
std::string recompute_name(const RecomputePolicy& p);
// compile(memory_budget=...) tries these in order, cheapest step time first, and keeps the first that fits:
// none, cheap, lean at rising thresholds, segments.
std::vector<RecomputePolicy> recompute_ladder();

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
//  lean:     see RecomputePolicy.
//  segments: the forward schedule is cut where a single activation carries everything later layers need
//            (ResNet block outputs, the layers of a plain chain); a cut is kept when the stretch since the last
//            kept cut contains an expensive op (convolution, linear, pooling, ...), and everything between
//            kept cuts is recomputed - one extra forward pass over those stretches, bounded live memory.
//            A stretch holding more than a quarter of the saved bytes (no cuts, as in U-Net's skip
//            connections) falls back to the cheap rule inside it.
RecomputeResult recompute_pass(Graph& g, int nf, const RecomputePolicy& policy, const std::vector<int>& keep);

}  // namespace cnn
