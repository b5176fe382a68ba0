"""Using a trained network: decoding, its caches and its compressed weights.

The network (model/gpt.py and its blocks) computes logits; everything here turns them into text
cheaply. A token's way through decoding, in order:
    generate.py      the decode loop behind `GPT.generate`: prefill, then one token at a time
    sampling.py      temperature, top-k and top-p over the last logits
    cache/           what each layer keeps of the tokens already seen (the layer-cache protocol,
                     full precision, rolling windows, int8/int4 KIVI, recurrent states, static buffers)
    decoder.py       the static cache through torch.compile (CUDA graphs on a GPU)
    speculative.py   a draft proposes k tokens, the network verifies them in one forward
    mtp_draft.py     the network's own multi-token-prediction modules as that draft
    quantize.py      int8/int4 weights, or int8 weights and inputs (w8a8), of the Linear layers
"""
