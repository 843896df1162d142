"""The soak run (`scripts/soak MINUTES`): the shipped product under mixed load and kill -9, then an
exact reconciliation of what the server acknowledged against what the journalists decrypt.

newsroom.py  the instance, made with the real commands, and the journalist's laptop
service.py   `intake serve --tor none` supervised as systemd would, and the kill -9 monkey
load.py      sources (new, returning, slow) and the journalist (exports, decrypts, replies)
reconcile.py the final export, decrypt, comparison and `intake check`
__main__.py  runs it all and prints the figures
"""
