"""Labelled corpora on disk, one reader per layout, shared by training, evaluation and predict.

Labels always go through pipeline.labels; an unusable file raises ``errors.DataError`` (a
ValueError) naming it. Modules by modality:

- ``faces``: FER2013-format ``.npz`` face crops (``fer_faces``, ``read_fer_npz``) and the FER+
  crowd votes row-aligned to them (``ferplus_votes``, ``ferplus_votes_path``); a split with its
  labels (the file's or the FER+ majority) and votes together (``fer_split``);
- ``speech``: RAVDESS-named and TESS-foldered audio (``speech_items``), labelled audio for
  evaluation (``labelled_audio``: a RAVDESS folder or a path,label CSV);
- ``text``: MELD CSV, GoEmotions TSV and dair-ai files (``read_grouped``, ``read_examples``);
- ``clips``: labelled video clips for fusion training and clip evaluation (``read_clips``);
- ``manifest``: the generic ``path,label[,...]`` CSV (``labelled_csv``).
"""
