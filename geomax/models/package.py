"""Save and load geomax model folders: ``.pth`` weights, ``.emd`` definition, ``.dlpk`` package, HTML report.

A model folder ``<folder>/`` holds:

- ``<name>.pth``: the network's state dict;
- ``<name>.emd``: JSON in ArcGIS's style (Framework, ModelType, ModelName, Classes,
  Panoptic_Segmentation_Instance_Classes, ExtractBands, ImageHeight / ImageWidth) plus
  ``ModelParameters`` (network variant and settings, the loss, post-processing,
  training and tiling configs, band names and normalisation statistics) and
  ``Metrics``: :meth:`geomax.models.state.ModelState.to_emd`;
- ``model_metrics.html``: loss curve, metrics table and sample results (images inline);
- ``<name>.dlpk``: a zip of the three files above, the one file to hand to someone else.
"""
from __future__ import annotations

import base64
import html
import io
import json
import shutil
import zipfile
from pathlib import Path

import torch

from .._version import __version__
from ..errors import ModelError, OutputError
from ..publish import check_replaceable, publish_folder, scratch_folder

__all__ = ["write_model_package", "read_model_package", "metrics_html"]


def write_model_package(model, folder: str | Path, overwrite: bool = False) -> Path:
    """Write the model folder (see module docstring) and return it.

    ``overwrite`` replaces an earlier geomax model folder only (:func:`geomax.publish.check_replaceable`).
    The files are written to a hidden folder beside the target, which is moved in place only
    when complete (:func:`geomax.publish.publish_folder`): an interrupted save leaves the
    earlier model (or nothing) at ``folder``, never a half-written one.
    """
    folder = Path(folder)
    name = folder.name
    check_replaceable(folder, overwrite, "model", "model folder")
    try:
        tmp = scratch_folder(folder)
    except OSError as exc:
        raise OutputError(f"Cannot save the model to '{folder}': {exc.strerror or exc}. Choose a writable "
                          "folder.") from exc
    try:
        torch.save(model.learn.model.state_dict(), tmp / f"{name}.pth")
        emd = model.state.to_emd(f"{name}.pth")
        (tmp / f"{name}.emd").write_text(json.dumps(emd, indent=2))
        (tmp / "model_metrics.html").write_text(metrics_html(model, emd))
        with zipfile.ZipFile(tmp / f"{name}.dlpk", "w", zipfile.ZIP_DEFLATED) as zf:
            for fname in (f"{name}.emd", f"{name}.pth", "model_metrics.html"):
                zf.write(tmp / fname, arcname=fname)
        publish_folder(tmp, folder, "model")
    except OSError as exc:
        raise OutputError(f"Cannot save the model to '{folder}': {exc.strerror or exc}. Free some space or choose "
                          "another folder; an earlier model there is unchanged.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_model_package(path: str | Path) -> tuple[dict, dict]:
    """Read ``(emd dict, state dict)`` from a model folder, its ``.emd`` or its ``.dlpk``."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"Model '{path}' does not exist. Give the model folder, its .emd or its .dlpk.")
    try:
        if path.is_dir():
            emds = sorted(path.glob("*.emd"))
            if not emds:
                raise ModelError(f"No .emd file in model folder '{path}'. Give the folder that save() wrote (it "
                                 "holds the .emd and .pth), or the model's .dlpk.")
            path = emds[0]
        if path.suffix.lower() == ".dlpk":
            with zipfile.ZipFile(path) as zf:
                emd_names = [n for n in zf.namelist() if n.endswith(".emd")]
                if not emd_names:
                    raise ModelError(f"'{path}' holds no .emd file; it is not a geomax model package. Give a .dlpk "
                                     "that geomax saved, or save the model again.")
                emd = _parse_emd(zf.read(emd_names[0]).decode("utf-8"), path)
                weights = zf.read(_model_file(emd, path))
            state_dict = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        elif path.suffix.lower() == ".emd":
            emd = _parse_emd(path.read_text(), path)
            pth = path.parent / _model_file(emd, path)
            if not pth.exists():
                raise ModelError(f"Weights file '{pth}' named by '{path}' is missing. Move the .pth back next to "
                                 "the .emd, or save the model again.")
            state_dict = torch.load(pth, map_location="cpu", weights_only=True)
        else:
            raise ModelError(f"'{path}' is not a model folder, .emd or .dlpk. Give one of those (as save() "
                             "writes them).")
    except zipfile.BadZipFile as exc:
        raise ModelError(f"'{path}' is not a valid .dlpk (zip) file: {exc}. Save the model again.") from exc
    except (KeyError, RuntimeError, EOFError, OSError) as exc:
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"Cannot read the model weights of '{path}': {exc}. Check that the .pth / .dlpk is "
                         "complete (not cut short); copy or save the model again.") from exc
    return emd, state_dict


def _parse_emd(text: str, path: Path) -> dict:
    try:
        emd = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"'{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); "
                         "the model definition is corrupt. Save the model again.") from exc
    if not isinstance(emd, dict) or emd.get("ModelName") != "MaXDeepLab" or "ModelParameters" not in emd:
        raise ModelError(f"'{path}' is not a geomax MaXDeepLab model definition "
                         "(ModelName 'MaXDeepLab' and ModelParameters expected).")
    for key in ("network_config", "band_names", "band_stats"):
        if key not in emd["ModelParameters"]:
            raise ModelError(f"'{path}' lacks ModelParameters.{key}; the model definition is incomplete. Save the "
                             "model again with geomax (or restore the original .emd).")
    return emd


def _model_file(emd: dict, path: Path) -> str:
    name = emd.get("ModelFile")
    if not name:
        raise ModelError(f"'{path}' names no ModelFile (the .pth weights). Save the model again with geomax (or "
                         "restore the original .emd).")
    return name


# ------------------------------------------------------------------ report
def _png_base64(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def metrics_table_html(metrics: dict) -> str:
    """HTML tables of PQ / SQ / RQ (all, things, stuff) and per class."""
    if not metrics or "all" not in metrics:
        return "<p>No metrics computed (no validation data).</p>"
    rows = "".join(
        f"<tr><td>{k}</td><td>{100 * metrics[k]['pq']:.1f}</td><td>{100 * metrics[k]['sq']:.1f}</td>"
        f"<td>{100 * metrics[k]['rq']:.1f}</td><td>{metrics[k].get('n', '')}</td></tr>"
        for k in ("all", "things", "stuff") if k in metrics)
    out = ("<table><tr><th>classes</th><th>PQ</th><th>SQ</th><th>RQ</th><th>n classes</th></tr>"
           f"{rows}</table>")
    per = metrics.get("per_class", {})
    if per:
        rows = "".join(
            f"<tr><td>{html.escape(str(n))}</td><td>{100 * m['pq']:.1f}</td><td>{100 * m['sq']:.1f}</td>"
            f"<td>{100 * m['rq']:.1f}</td><td>{m.get('tp', '')}</td><td>{m.get('fp', '')}</td>"
            f"<td>{m.get('fn', '')}</td></tr>" for n, m in per.items())
        out += ("<h3>Per class</h3><table><tr><th>class</th><th>PQ</th><th>SQ</th><th>RQ</th><th>TP</th>"
                f"<th>FP</th><th>FN</th></tr>{rows}</table>")
    ap = metrics.get("mask_ap")
    if ap:
        out += "<h3>Thing mask AP (COCO segm)</h3><table>" + "".join(
            f"<tr><td>{k}</td><td>{100 * v:.1f}</td></tr>" for k, v in ap.items() if isinstance(v, (int, float))
        ) + "</table>"
    return out


REPORT_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
              "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#eee}"
              "td:first-child{text-align:left}img{max-width:100%}")


def metrics_html(model, emd: dict) -> str:
    """Self-contained HTML report of a model: settings, loss curve, metrics, sample results."""
    parts = [f"<html><head><meta charset='utf-8'><title>MaXDeepLab model metrics</title>"
             f"<style>{REPORT_CSS}</style></head><body>",
             "<h1>MaXDeepLab model</h1>",
             f"<p>backbone <b>{html.escape(str(emd['ModelParameters']['backbone']))}</b>, "
             f"classes {html.escape(', '.join(model.class_table.names))} "
             f"(things: {html.escape(', '.join(model.class_table.thing_names) or 'none')}), "
             f"bands {html.escape(', '.join(model.band_names))}, chip size {emd['ImageHeight']} px, "
             f"geomax {__version__}</p>"]
    rec = getattr(model.learn, "recorder", None)
    if rec is not None and len(getattr(rec, "losses", [])):
        try:
            fig = model.plot_losses(show=False)
            parts.append(f"<h2>Training and validation loss</h2><img src='data:image/png;base64,{_png_base64(fig)}'>")
        except Exception as exc:  # a report without its plot beats no model package
            parts.append(f"<p>Loss curve unavailable: {html.escape(str(exc))}</p>")
    parts.append("<h2>Panoptic quality (validation chips)</h2>")
    parts.append(metrics_table_html(model.metrics))
    if model.has_validation:
        try:
            fig = model.show_results(rows=3)
            parts.append(f"<h2>Sample results</h2><img src='data:image/png;base64,{_png_base64(fig)}'>")
        except Exception as exc:
            parts.append(f"<p>Sample results unavailable: {html.escape(str(exc))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
