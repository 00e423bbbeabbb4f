"""The one place a tokenizer is loaded: every command (tokenize, perplexity, score, generate,
eval, demo, expand) goes through `Tokenizer`, so BOS, EOS and errors are handled the same way
everywhere. Today it wraps a SentencePiece model (Llama, Mistral, SOLAR and the merged Korean
tokenizer are all SentencePiece); a base with another tokenizer would plug in here.

    python -c "from support.tokenizer_io import Tokenizer; print(Tokenizer.load('out/merged').encode('안녕', bos=True))"
"""
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

MODEL_FILE = "tokenizer.model"
# what a Hugging Face folder may hold of its tokenizer: copied along with the weights
HF_TOKENIZER_FILES = (MODEL_FILE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                      "added_tokens.json")


def model_path(path):
    """A .model file, or the tokenizer.model inside a folder."""
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def load_proto(model):
    """A ModelProto from a .model path, a folder holding tokenizer.model, bytes, or a proto."""
    if isinstance(model, sp_pb2.ModelProto):
        return model
    name = "model bytes"
    if not isinstance(model, bytes):
        path = model_path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such SentencePiece model (a .model file or a folder with "
                                    f"{MODEL_FILE})")
        name, model = str(path), path.read_bytes()
    proto = sp_pb2.ModelProto()
    try:
        proto.ParseFromString(model)
    except Exception as e:
        raise ValueError(f"{name}: not a SentencePiece model ({e})") from None
    if not proto.pieces:
        raise ValueError(f"{name}: not a SentencePiece model (no pieces)")
    return proto


def raw_proto(proto):
    """A copy that segments text as it is: no normalizer, no dummy prefix, spaces kept (they
    become "▁"), i.e. how BPE splits a piece's surface text inside running text."""
    copy = sp_pb2.ModelProto()
    copy.CopyFrom(proto)
    ns = copy.normalizer_spec
    ns.name, ns.precompiled_charsmap = "identity", b""
    ns.add_dummy_prefix, ns.remove_extra_whitespaces = False, False
    return copy


class Tokenizer:
    """encode / decode / pieces / special ids of one tokenizer. `bos_id` and `eos_id` are None
    when the model has no such piece; encode(..., bos=True) prepends BOS only when there is one.
    Pickles as its model bytes, so worker processes rebuild it."""

    def __init__(self, model, name=None, raw=False):
        proto = load_proto(model)
        self.name = name or (str(model_path(model)) if isinstance(model, (str, Path)) else "model bytes")
        self.proto = raw_proto(proto) if raw else proto
        self.model_bytes = self.proto.SerializeToString()
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        except RuntimeError as e:    # parsed, but SentencePiece cannot use it (a cut that kept whole fields)
            raise ValueError(f"{self.name}: not a usable SentencePiece model ({e})") from None
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None

    @classmethod
    def load(cls, path, raw=False):
        """From a .model file or a folder holding tokenizer.model; errors name the path."""
        return cls(path, raw=raw)

    def encode(self, text, bos=False):
        """ids of one text, or a list of id lists for a list of texts; BOS first when asked and present."""
        ids = self.sp.encode(text)
        if not (bos and self.bos_id is not None):
            return ids
        return [self.bos_id] + ids if isinstance(text, str) else [[self.bos_id] + x for x in ids]

    def decode(self, ids):
        return self.sp.decode(list(ids))

    def __getstate__(self):
        return {"name": self.name, "model_bytes": self.model_bytes}

    def __setstate__(self, state):
        self.__init__(state["model_bytes"], name=state["name"])
