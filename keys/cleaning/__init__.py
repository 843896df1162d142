"""Reading decrypted files safely: danger flags, metadata cleaning, the triage view.

Not part of the toolkit's core: envelope, identity, bundle, unpack and the
modules they use never import this package (tests/test_keys_offline.py checks).
Standard library only, like the core; the cleaning itself is done by Debian's
``mat2`` command inside a ``bwrap`` sandbox, both found on PATH when needed (and,
for MP4-family videos, Debian's ``ffprobe`` and ``ffmpeg`` in the same sandbox).

wording   every sentence the report and the triage view show, in one place
sniff     what a file is, from its first bytes
archives  zip and tar members, read from headers only, never extracted
danger    flags for files to be careful with, from bytes only
tracks    tracks of a video that are neither picture nor sound (GPS, timecode)
sandbox   run one command on one file under bubblewrap, with time and memory limits
streams   an MP4-family video's streams, and a first copy of its sound and moving picture only
hevc_header  HEVC's picture header in that copy: its parameter sets only (no encoder text)
metadata  mat2 in the sandbox: what metadata a file carries, a cleaned copy
folder    clean every decrypted file of a folder, keep a record per source
triage    index.html as a triage view
"""
