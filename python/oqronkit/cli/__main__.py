from oqronkit.cli import run

run()
