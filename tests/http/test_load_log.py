"""Load progress goes through the server's log (issue 11, "`--log-format json` mixes plain-text
lines"): with --log-format json every progress line is one JSON object, and in the text format
it carries the log's timestamp and level like every other line."""
import json
import re


def test_load_progress_is_json_with_log_format_json(start_server):
    s = start_server("--log-format", "json")
    # " tensors, " is the progress line's own; "loading" alone also matches a model path under a
    # folder named so (a worktree /work/wt-loading), whose notice line names tensors too
    progress = [l for l in s.lines if " tensors, " in l and "loading" in l]
    assert progress, s.lines
    for line in progress:
        e = json.loads(line)  # raises on a plain-text line
        assert e["level"] == "info" and re.match(r"loading \d+/\d+ tensors", e["msg"]), e
    assert json.loads(progress[-1])["msg"].startswith("loading ")


def test_load_progress_text_format(server):
    progress = [l for l in server.lines if " tensors, " in l and "loading" in l]
    assert progress, server.lines
    for line in progress:
        assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z info loading \d+/\d+ tensors", line), line
