from tidings.cli.main import app

app(prog_name="tidings")
