"""launch/colab_demo.ipynb executes headless on a CPU in quick mode (nbclient, kernel at the repo
root) and shows the interaction-map PNG."""

import base64
import io

import pytest
from PIL import Image

from demo_checkpoint import QUICK_STEPS, REPO, one_device_env

NOTEBOOK = REPO / "launch" / "colab_demo.ipynb"


@pytest.mark.slow
def test_colab_notebook_runs_headless_in_quick_mode(quick_demo_root):
    import nbclient  # pylint: disable=import-outside-toplevel
    import nbformat  # pylint: disable=import-outside-toplevel

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "parameters" in nb.cells[1].metadata.get("tags", [])
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    # The session's quick demo folder: the notebook's training command resumes at its last step.
    client.execute(env=one_device_env(EGOEXO_NOTEBOOK_QUICK="1", EGOEXO_NOTEBOOK_WORKDIR=str(quick_demo_root)))
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "requirements already installed; skipping pip install" in text
    assert f"resumed from step {QUICK_STEPS}" in text and "interaction maps:" in text
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1
    img = Image.open(io.BytesIO(base64.b64decode(pngs[0]["data"]["image/png"])))
    # one 160-px column per clip frame (8), a one-line title, then frame, hand and object rows
    assert img.size == (8 * 160, 8 + 14 + 3 * 160 + 16)
