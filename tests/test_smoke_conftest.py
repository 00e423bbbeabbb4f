import sentencepiece as spm


def test_base_spm_is_llama_style(base_spm):
    sp = spm.SentencePieceProcessor(model_file=str(base_spm))
    assert sp.get_piece_size() == 2000
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    assert sp.decode(sp.encode("안녕하세요 hello ㅋㅋ")) == "안녕하세요 hello ㅋㅋ"
