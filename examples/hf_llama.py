"""A Hugging Face LLaMA model on the CPU with fastnorm's RMS norm and fused residual add.

Each ``LlamaDecoderLayer`` computes ``h = residual + attn(...)``, then
``post_attention_layernorm(h)`` and keeps h as the next residual: two passes over memory
that :func:`fastnorm.torch.add_rms_norm` does in one. :func:`patch` rewrites a model in
place: every ``LlamaRMSNorm`` computes with :func:`fastnorm.torch.rms_norm`, every decoder
layer's forward uses the fused add. The weights, the state dict and the outputs (up to
float32 rounding) stay those of the original model.

The script builds a small random-weight model from a config (nothing is downloaded), checks
the patched model against the original, and times both, alternating, inference and a
training step (forward, loss, backward, SGD)::

    pip install transformers==4.57.6
    python examples/hf_llama.py [--layers 4] [--hidden 1024] [--seq 256] [--batch 4]
                                [--repeat 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import types

import torch

import fastnorm
import fastnorm.torch as fnt


def _rms_norm_forward(self, hidden_states):
    """LlamaRMSNorm.forward with fastnorm (the same math: x / rms(x) * weight)."""
    return fnt.rms_norm(hidden_states, self.weight.shape, self.weight, self.variance_epsilon)


def _decoder_forward(self, hidden_states, attention_mask=None, position_ids=None,
                     past_key_values=None, use_cache=False, cache_position=None,
                     position_embeddings=None, **kwargs):
    """LlamaDecoderLayer.forward (transformers 4.5x) with the residual add after the
    attention fused into the post-attention RMS norm."""
    residual = hidden_states
    hidden_states = self.input_layernorm(hidden_states)
    hidden_states, _ = self.self_attn(
        hidden_states=hidden_states, attention_mask=attention_mask,
        position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
        cache_position=cache_position, position_embeddings=position_embeddings, **kwargs)
    norm = self.post_attention_layernorm
    # was: hidden_states = residual + hidden_states; residual = hidden_states;
    #      hidden_states = norm(hidden_states)
    hidden_states, residual = fnt.add_rms_norm(hidden_states, residual, norm.weight.shape,
                                               norm.weight, norm.variance_epsilon)
    hidden_states = self.mlp(hidden_states)
    return residual + hidden_states


def patch(model):
    """Make a transformers LLaMA model compute its RMS norms with fastnorm, the
    post-attention one fused with the residual add; in place; returns the model."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm

    for m in model.modules():
        if isinstance(m, LlamaRMSNorm):
            m.forward = types.MethodType(_rms_norm_forward, m)
        elif isinstance(m, LlamaDecoderLayer):
            m.forward = types.MethodType(_decoder_forward, m)
    return model


def make_model(layers=4, hidden=1024, heads=16, vocab=1000, seed=0):
    """A random-weight LlamaForCausalLM (float32, SDPA attention, training mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=4096,
                         attn_implementation="sdpa")
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _step(model, ids):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def run():
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    return run


def _infer(model, ids):
    def run():
        with torch.inference_mode():
            model(input_ids=ids)
    return run


def check(original, patched, ids):
    """Largest difference of the logits and of the parameter gradients of one backward."""
    out = []
    for m in (original, patched):
        m.zero_grad(set_to_none=True)
        res = m(input_ids=ids, labels=ids)
        res.loss.backward()
        out.append((res.logits.detach(), [p.grad for p in m.parameters()]))
    (la, ga), (lb, gb) = out
    grad_err = max(float((a - b).abs().max() / max(1.0, float(a.abs().max())))
                   for a, b in zip(ga, gb, strict=True))
    return float((la - lb).abs().max()), grad_err


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    fastnorm.set_num_threads(a.threads)
    original = make_model(a.layers, a.hidden, heads=max(1, a.hidden // 64))
    patched = patch(copy.deepcopy(original))
    ids = torch.randint(0, 1000, (a.batch, a.seq))
    logit_err, grad_err = check(original, patched, ids)
    print(f"patched vs original: logits max |diff| {logit_err:.2e}, "
          f"gradients max relative diff {grad_err:.2e}")
    print(f"{'pass':6} {'original ms':>12} {'patched ms':>11} {'speedup':>8}")
    for name, make in (("infer", _infer), ("train", _step)):
        fa, fb = make(original, ids), make(patched, ids)
        fa(), fb()
        ta, tb = [], []
        for r in range(a.repeat):
            for f, t in ((fa, ta), (fb, tb)) if r % 2 == 0 else ((fb, tb), (fa, ta)):
                t0 = time.perf_counter()
                f()
                t.append(time.perf_counter() - t0)
        ma, mb = statistics.median(ta), statistics.median(tb)
        print(f"{name:6} {ma * 1e3:12.1f} {mb * 1e3:11.1f} {ma / mb:7.2f}x")


if __name__ == "__main__":
    main()
