"""Training a Conformer-CTC on a release (extra ``[train]``); no module imports faster-whisper, CTranslate2, PyAV
or Ray at import time. Design: docs/architecture.md (Train)."""
