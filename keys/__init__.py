"""intake's offline toolkit and crypto format. PyNaCl and the standard library only.

envelope       streaming public-key encryption, format v2, v1 still read (the server writes, the laptop reads)
identity       journalist key pairs, passphrase-protected secret files, fingerprints
bundle         export bundles (server -> laptop), signed by the server
reply_bundle   reply bundles (laptop -> server), signed by a journalist, routing sealed to the server
server_key     the server's public key on the laptop: its file, fingerprint and the trusted set
pins           sources pinned on the laptop: id, designation and reply key stay together
strict_json    the one strict JSON reading every reader uses; canonical base64
files          safe names and all-or-nothing writes for files named by hostile input
unpack         decrypt an export bundle into a folder per source
source_record  the source.json each decrypted source folder carries
index          index.html for a decrypted folder
progress       a progress bar on stderr
cli            the ``intake-keys`` command
cleaning/      danger flags, metadata cleaning (mat2 in bubblewrap), the triage view;
               outside the core: only cli imports it
"""
