"""Servers over recorded and live days (relay, REST snapshot; more to come): checked inputs,
nothing read outside the data root."""
