"""Synthetic speech and degradations: TTS speech, sentences, degradation families, codecs,
objective (PESQ) labels and the demo corpus builder."""
