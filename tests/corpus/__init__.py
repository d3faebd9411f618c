"""A corpus of tiny Hugging Face transformers models, built from configs in code with random weights (no
downloads): text encoders, decoders, seq2seq, vision, audio and segmentation architectures.

Each builder in :data:`BUILDERS` returns ``(model, example_inputs)``: ``model`` is in eval mode and returns plain
tensors (one, or a tuple), ``example_inputs`` is a tuple of tensors to call it with positionally. Sizes are
tiny (hidden 32-64, 2 layers, sequences of 8, images of 32x32) and every builder seeds torch itself, so the
weights and inputs are the same on every call. ``transformers`` is imported inside the builders only, so this
package imports without it (tests using it skip at run time instead of failing at collection)."""
from __future__ import annotations

from collections.abc import Callable

import torch

# local imports: transformers is optional (and slow to import); each builder imports the classes it needs

SEED = 0
VOCAB = 100
SEQ = 8
BATCH = 2
IMAGE = 32

# one small transformer, shared by the text configs (each family names the fields its own way)
HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 64


class Outputs(torch.nn.Module):
    """Calls a transformers model with its example inputs as keywords and returns the named output fields as
    plain tensors (a single tensor for one name), so exporters and compilers see no ModelOutput objects."""

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output_names = output_names

    def forward(self, *inputs):
        out = self.model(**dict(zip(self.input_names, inputs)), return_dict=True)
        values = tuple(out[name] for name in self.output_names)
        return values[0] if len(values) == 1 else values


def wrap(model, inputs: dict, *outputs: str):
    """``(Outputs(model).eval(), tuple(inputs.values()))`` for a builder's return."""
    return Outputs(model, tuple(inputs), outputs).eval(), tuple(inputs.values())


def token_inputs(vocab: int = VOCAB, mask: bool = True, seq: int = SEQ) -> dict:
    """``input_ids`` (batch 2) and, with ``mask``, an ``attention_mask`` whose second row is right-padded."""
    ids = torch.randint(3, vocab, (BATCH, seq))
    if not mask:
        return {"input_ids": ids}
    attention = torch.ones(BATCH, seq, dtype=torch.long)
    attention[1, -2:] = 0
    return {"input_ids": ids, "attention_mask": attention}


def image_inputs(channels: int = 3, size: int = IMAGE) -> dict:
    return {"pixel_values": torch.randn(1, channels, size, size)}


def seeded(fn: Callable) -> Callable:
    """Run a builder under a fixed torch seed (weights and example inputs) without touching the global RNG."""
    def build():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            return fn()

    build.__name__ = fn.__name__
    build.__doc__ = fn.__doc__
    return build


def encoder_config(cls, **extra):
    """A BERT-style encoder config: 2 layers, hidden 32, 4 heads, FFN 64, no dropout."""
    return cls(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
               intermediate_size=FFN, max_position_embeddings=64, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, **extra)


def decoder_config(cls, **extra):
    """A Llama-style decoder config (Llama, Mistral, Qwen2): grouped-query attention with 2 KV heads."""
    return cls(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
               num_key_value_heads=2, intermediate_size=FFN, max_position_embeddings=64, use_cache=False,
               **extra)


# ---------------------------------------------------------------------------------------------- text encoders
@seeded
def bert():
    """BertModel: last hidden state and pooled output."""
    from transformers import BertConfig, BertModel

    return wrap(BertModel(encoder_config(BertConfig)), token_inputs(), "last_hidden_state", "pooler_output")


@seeded
def roberta():
    """RobertaForMaskedLM: token logits (position ids offset by the padding index)."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    config = encoder_config(RobertaConfig, pad_token_id=1)
    return wrap(RobertaForMaskedLM(config), token_inputs(), "logits")


@seeded
def albert():
    """AlbertForSequenceClassification: factorized embeddings (16 → 32), layers sharing weights."""
    from transformers import AlbertConfig, AlbertForSequenceClassification

    config = encoder_config(AlbertConfig, embedding_size=16, num_labels=3, classifier_dropout_prob=0.0)
    return wrap(AlbertForSequenceClassification(config), token_inputs(), "logits")


@seeded
def distilbert():
    """DistilBertModel: last hidden state."""
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                              max_position_embeddings=64, dropout=0.0, attention_dropout=0.0)
    return wrap(DistilBertModel(config), token_inputs(), "last_hidden_state")


@seeded
def electra():
    """ElectraForPreTraining (the discriminator): per-token logits, embeddings 16 projected to 32."""
    from transformers import ElectraConfig, ElectraForPreTraining

    config = encoder_config(ElectraConfig, embedding_size=16)
    return wrap(ElectraForPreTraining(config), token_inputs(), "logits")


@seeded
def deberta_v2():
    """DebertaV2Model: disentangled relative-position attention with log buckets."""
    from transformers import DebertaV2Config, DebertaV2Model

    config = encoder_config(DebertaV2Config, relative_attention=True, position_buckets=16, max_relative_positions=32,
                            pos_att_type=["p2c", "c2p"], position_biased_input=False)
    return wrap(DebertaV2Model(config), token_inputs(), "last_hidden_state")


@seeded
def mobilebert():
    """MobileBertModel: bottleneck layers (32 -> 16 inside each block), stacked FFNs, no-norm (NoNorm) layers."""
    from transformers import MobileBertConfig, MobileBertModel

    config = encoder_config(MobileBertConfig, embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16,
                            num_feedforward_networks=2)
    return wrap(MobileBertModel(config), token_inputs(), "last_hidden_state", "pooler_output")


# ---------------------------------------------------------------------------------------------- decoders
@seeded
def gpt2():
    """GPT2LMHeadModel: logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, n_positions=64,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                        bos_token_id=0, eos_token_id=0)
    return wrap(GPT2LMHeadModel(config), token_inputs(), "logits")


@seeded
def gpt_neox():
    """GPTNeoXForCausalLM: parallel attention + MLP, partial rotary embeddings."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                           num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=64,
                           rotary_pct=0.5, use_cache=False)
    return wrap(GPTNeoXForCausalLM(config), token_inputs(), "logits")


@seeded
def llama():
    """LlamaForCausalLM: RMSNorm, rotary embeddings, SwiGLU, grouped-query attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return wrap(LlamaForCausalLM(decoder_config(LlamaConfig)), token_inputs(), "logits")


@seeded
def mistral():
    """MistralForCausalLM with a sliding window shorter than the sequence (4 < 8)."""
    from transformers import MistralConfig, MistralForCausalLM

    config = decoder_config(MistralConfig, sliding_window=4)
    return wrap(MistralForCausalLM(config), token_inputs(), "logits")


@seeded
def qwen2():
    """Qwen2ForCausalLM: Llama-like with biased Q/K/V projections."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return wrap(Qwen2ForCausalLM(decoder_config(Qwen2Config)), token_inputs(), "logits")


@seeded
def bloom():
    """BloomForCausalLM: ALiBi position biases, embedding LayerNorm."""
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(vocab_size=VOCAB, hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS, use_cache=False,
                         hidden_dropout=0.0, attention_dropout=0.0)
    return wrap(BloomForCausalLM(config), token_inputs(), "logits")


# ---------------------------------------------------------------------------------------------- seq2seq
def seq2seq_inputs(decoder_start: int = 0) -> dict:
    inputs = token_inputs()
    decoder = torch.randint(3, VOCAB, (BATCH, SEQ // 2))
    decoder[:, 0] = decoder_start
    return {**inputs, "decoder_input_ids": decoder}


@seeded
def t5():
    """T5ForConditionalGeneration (encoder + decoder with decoder_input_ids): relative-position buckets."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=8, d_ff=FFN, num_layers=LAYERS, num_heads=HEADS,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                      use_cache=False, decoder_start_token_id=0)
    return wrap(T5ForConditionalGeneration(config), seq2seq_inputs(), "logits")


@seeded
def bart():
    """BartForConditionalGeneration: encoder + decoder with decoder_input_ids, learned positions."""
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(vocab_size=VOCAB, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS,
                        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
                        decoder_ffn_dim=FFN, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
                        activation_dropout=0.0, use_cache=False)
    return wrap(BartForConditionalGeneration(config), seq2seq_inputs(decoder_start=2), "logits")


# ---------------------------------------------------------------------------------------------- vision
@seeded
def vit():
    """ViTForImageClassification on 32x32 images with 8x8 patches."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=IMAGE, patch_size=8, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                       num_attention_heads=HEADS, intermediate_size=FFN, num_labels=5, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    return wrap(ViTForImageClassification(config), image_inputs(), "logits")


@seeded
def swin():
    """SwinForImageClassification: shifted 4x4 windows over 2x2 patches, one patch merge."""
    from transformers import SwinConfig, SwinForImageClassification

    config = SwinConfig(image_size=IMAGE, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                        window_size=4, mlp_ratio=2.0, num_labels=5, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, drop_path_rate=0.0)
    return wrap(SwinForImageClassification(config), image_inputs(), "logits")


@seeded
def convnext():
    """ConvNextForImageClassification: depthwise 7x7 convs, channels-last LayerNorm, layer scale."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=5, drop_path_rate=0.0)
    return wrap(ConvNextForImageClassification(config), image_inputs(), "logits")


@seeded
def resnet():
    """ResNetForImageClassification: bottleneck blocks, batch norm in eval mode."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="bottleneck",
                          num_labels=5)
    model = ResNetForImageClassification(config)
    randomize_batch_norm(model)
    return wrap(model, image_inputs(), "logits")


@seeded
def mobilenet_v2():
    """MobileNetV2ForImageClassification at depth multiplier 0.35: inverted residuals, ReLU6."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    config = MobileNetV2Config(image_size=IMAGE, depth_multiplier=0.35, finegrained_output=False, num_labels=5,
                               classifier_dropout_prob=0.0)
    model = MobileNetV2ForImageClassification(config)
    randomize_batch_norm(model)
    return wrap(model, image_inputs(), "logits")


@seeded
def efficientnet():
    """EfficientNetForImageClassification (B0 scaled down): depthwise convs, squeeze-and-excitation, swish;
    batch norm at PyTorch's initial values (weight and running_var both ones: dedupe merges them)."""
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    config = EfficientNetConfig(image_size=IMAGE, width_coefficient=0.25, depth_coefficient=0.25,
                                hidden_dim=320, num_labels=5, dropout_rate=0.0, drop_connect_rate=0.0)
    model = EfficientNetForImageClassification(config)
    with torch.no_grad():   # transformers' init (N(0, 0.02) weights, a zero head) shrinks the logits to ~1e-29
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm)):
                module.reset_parameters()   # PyTorch's own init; batch norm: weight 1 = running_var 1
    return wrap(model, image_inputs(), "logits")


def randomize_batch_norm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode batch norm is not the identity."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)


# ---------------------------------------------------------------------------------------------- audio
@seeded
def wav2vec2():
    """Wav2Vec2ForCTC on 0.1 s of 16 kHz audio: conv feature extractor, conv positional embedding."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    config = Wav2Vec2Config(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=FFN, conv_dim=(16, 16, 16),
                            conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0,
                            activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0,
                            mask_time_prob=0.0, do_stable_layer_norm=False)
    return wrap(Wav2Vec2ForCTC(config), {"input_values": torch.randn(1, 1600)}, "logits")


@seeded
def whisper():
    """WhisperModel's encoder: two conv layers over 16 mel bins x 32 frames, sinusoidal positions."""
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(vocab_size=VOCAB, num_mel_bins=16, d_model=HIDDEN, encoder_layers=LAYERS,
                           decoder_layers=LAYERS, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                           encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, max_source_positions=16,
                           max_target_positions=16, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                           use_cache=False, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                           decoder_start_token_id=0)
    encoder = WhisperModel(config).get_encoder()
    features = torch.randn(1, config.num_mel_bins, 2 * config.max_source_positions)
    return wrap(encoder, {"input_features": features}, "last_hidden_state")


# ---------------------------------------------------------------------------------------------- segmentation
@seeded
def segformer():
    """SegformerForSemanticSegmentation: its decode head upsamples every stage to 1/4 resolution with bilinear
    interpolation (ONNX Resize) before the per-pixel classifier; logits are (1, labels, 8, 8)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=32, num_labels=4, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0, drop_path_rate=0.0)
    model = SegformerForSemanticSegmentation(config)
    randomize_batch_norm(model)
    return wrap(model, image_inputs(), "logits")


# ---------------------------------------------------------------------------------------------- mixture of experts
def moe_config(cls, **extra):
    """A decoder config with 4 experts, 2 per token (transformers 5.x runs them as stacked 3-D weights through
    its grouped-matmul op)."""
    return cls(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
               num_key_value_heads=2, intermediate_size=FFN, max_position_embeddings=64, num_experts_per_tok=2,
               use_cache=False, **extra)


@seeded
def mixtral():
    """MixtralForCausalLM: sparse MoE MLPs (4 experts, top-2) in every layer."""
    from transformers import MixtralConfig, MixtralForCausalLM

    return wrap(MixtralForCausalLM(moe_config(MixtralConfig, num_local_experts=4)), token_inputs(), "logits")


@seeded
def qwen2_moe():
    """Qwen2MoeForCausalLM: 4 routed experts (top-2) plus a gated shared expert per layer."""
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    config = moe_config(Qwen2MoeConfig, num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=64,
                        decoder_sparse_step=1)
    return wrap(Qwen2MoeForCausalLM(config), token_inputs(), "logits")


@seeded
def olmoe():
    """OlmoeForCausalLM: 4 experts (top-2), QK layer norms."""
    from transformers import OlmoeConfig, OlmoeForCausalLM

    return wrap(OlmoeForCausalLM(moe_config(OlmoeConfig, num_experts=4)), token_inputs(), "logits")


@seeded
def switch():
    """SwitchTransformersEncoderModel: top-1 experts with a capacity (tokens over it are dropped)."""
    from transformers import SwitchTransformersConfig, SwitchTransformersEncoderModel

    config = SwitchTransformersConfig(vocab_size=VOCAB, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=FFN,
                                      num_layers=LAYERS, num_sparse_encoder_layers=1, num_heads=HEADS,
                                      num_experts=4, expert_capacity=4, num_decoder_layers=LAYERS,
                                      num_sparse_decoder_layers=1, dropout_rate=0.0)
    return wrap(SwitchTransformersEncoderModel(config), token_inputs(), "last_hidden_state")


BUILDERS: dict[str, Callable[[], tuple[torch.nn.Module, tuple]]] = {
    "bert": bert, "roberta": roberta, "albert": albert, "distilbert": distilbert, "electra": electra,
    "deberta_v2": deberta_v2, "mobilebert": mobilebert,
    "gpt2": gpt2, "gpt_neox": gpt_neox, "llama": llama, "mistral": mistral, "qwen2": qwen2, "bloom": bloom,
    "t5": t5, "bart": bart,
    "vit": vit, "swin": swin, "convnext": convnext, "resnet": resnet, "mobilenet_v2": mobilenet_v2,
    "efficientnet": efficientnet,
    "wav2vec2": wav2vec2, "whisper": whisper,
    "segformer": segformer,
    "mixtral": mixtral, "qwen2_moe": qwen2_moe, "olmoe": olmoe, "switch": switch,
}

# Models torch.onnx cannot export as written: a library operator (transformers' grouped_mm_fallback), or a
# loop over a data-dependent number of experts (Switch): no ONNX round trip for them (tests/test_onnx_corpus.py)
NOT_ONNX_EXPORTABLE = {"mixtral", "qwen2_moe", "olmoe", "switch"}


def hf_model(name: str) -> tuple[torch.nn.Module, dict]:
    """Corpus model ``name`` as a user holds it: the Hugging Face model itself (returning its ModelOutput,
    with the library's default ``use_cache=True`` where the config has it) and its inputs as the keyword
    dict a user passes with ``model(**batch)``."""
    wrapped, inputs = BUILDERS[name]()
    model = wrapped.model
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = True
    return model, dict(zip(wrapped.input_names, inputs))
