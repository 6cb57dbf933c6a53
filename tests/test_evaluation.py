"""Evaluation metrics (PSNR, SSIM, CLIP-IS, FID, AS) and folder reports, against hand-computed values."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
from PIL import Image

from engine.core.errors import InputError, ModelError
from engine.evaluation.fid import (
    INCEPTION_FILENAMES,
    INCEPTION_URL,
    fid_from_features,
    find_inception_weights,
    frechet_distance,
    gaussian_statistics,
)
from engine.evaluation.folders import MetricModels, evaluate_folders, pair_folders
from engine.evaluation.metrics import ClipImageSimilarity, parse_metrics, psnr, ssim
from engine.evaluation.report import EvaluationReport, results_table

C1 = (0.01 * 255) ** 2  # SSIM's stabiliser for 8-bit images: 6.5025


def ssim_of_constants(a: float, b: float) -> float:
    """SSIM formula for two constant windows: means a and b, no variance, so the contrast and
    structure factor is C2/C2 = 1 and only the luminance term (2ab + C1)/(a² + b² + C1) is left."""
    return (2 * a * b + C1) / (a * a + b * b + C1)


def constant(rgb, size=(24, 16)) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (size[1], size[0], 3)).copy()


def random_image(seed: int, low: int = 20, high: int = 200, size=(40, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (size[1], size[0], 3), dtype=np.uint8)


# --- PSNR / SSIM -------------------------------------------------------------------------


def test_psnr_identical_is_infinite_and_offset_matches_closed_form():
    image = random_image(0)
    assert psnr(image, image.copy()) == math.inf
    # every value shifted by d (no clipping: values stay in 25..204): MSE = d², PSNR = 10 log10(255²/d²)
    assert psnr(image + np.uint8(5), image) == pytest.approx(10 * math.log10(255**2 / 5**2), abs=1e-9)
    assert psnr(image, image + np.uint8(10)) == pytest.approx(28.130803608679102, abs=1e-9)  # 10 log10(650.25)
    # one MSE over all three channels: offsets (4, 0, 0) -> MSE = 16/3
    shifted = image.copy()
    shifted[..., 0] += 4
    assert psnr(shifted, image) == pytest.approx(10 * math.log10(255**2 * 3 / 16), abs=1e-9)


def test_ssim_is_one_for_identical_and_matches_constant_image_formula_per_channel():
    image = random_image(1)
    assert ssim(image, image.copy()) == pytest.approx(1.0, abs=1e-12)
    gt, pred = constant((100, 50, 200)), constant((120, 50, 180))
    # R: (2·100·120 + C1)/(100² + 120² + C1) = 24006.5025/24406.5025; G: 1; B: 72006.5025/72406.5025
    expected = (24006.5025 / 24406.5025 + 1.0 + 72006.5025 / 72406.5025) / 3
    assert expected == pytest.approx(0.9926955, abs=1e-7)  # 1 - 400/24406.5025 = 0.983611, 1 - 400/72406.5025 = 0.994476
    assert ssim(pred, gt) == pytest.approx(expected, abs=1e-6)


def test_pixel_metrics_refuse_size_mismatch_and_non_rgb():
    with pytest.raises(InputError, match="24x16 but ground truth is 20x16"):
        psnr(constant((1, 2, 3)), constant((1, 2, 3), size=(20, 16)))
    with pytest.raises(InputError, match="8-bit RGB"):
        ssim(np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8))


def test_parse_metrics_orders_like_table_1_and_rejects_unknown_names():
    assert parse_metrics("ssim, PSNR,as") == ("psnr", "ssim", "as")
    assert parse_metrics(["fid", "clip-is"]) == ("clip-is", "fid")
    with pytest.raises(InputError, match="lpips"):
        parse_metrics("psnr,lpips")


# --- CLIP-IS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_models_dir(tmp_path_factory):
    """A models directory whose image encoder is the tiny one `make_tiny` writes."""
    from engine.models.tiny import write_tiny_image_encoder

    root = tmp_path_factory.mktemp("clip-models")
    write_tiny_image_encoder(root / "colorflow" / "image_encoder")
    return root


def test_clip_is_is_cosine_of_image_embeds_of_the_official_encoder_layout(clip_models_dir):
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

    scorer = ClipImageSimilarity(str(clip_models_dir))  # loaded by resolve_models + ClipEmbedder
    a, b = Image.fromarray(random_image(2)), Image.fromarray(random_image(3, 0, 255))
    values = scorer([a, a, b], [a, b, a])
    # independently: the encoder's projected embeddings, cosine by hand
    model = CLIPVisionModelWithProjection.from_pretrained(clip_models_dir / "colorflow" / "image_encoder")
    pixels = CLIPImageProcessorPil()(images=[a, b], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ea, eb = model(pixel_values=pixels).image_embeds.double().numpy()
    cosine = ea @ eb / (np.linalg.norm(ea) * np.linalg.norm(eb))
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values[1] == pytest.approx(cosine, abs=1e-5)
    assert values[2] == pytest.approx(values[1], abs=1e-6)  # symmetric


# --- FID -----------------------------------------------------------------------------------


def test_frechet_distance_of_1d_gaussians_is_mean_gap_squared_plus_std_gap_squared():
    # N(1, 2²) vs N(4, 1²): (1-4)² + (2-1)² = 10
    assert frechet_distance([1.0], [[4.0]], [4.0], [[1.0]]) == pytest.approx(10.0, abs=1e-12)


def test_frechet_distance_with_non_commuting_covariances_matches_2x2_closed_form():
    # For 2x2 M with non-negative eigenvalues, tr √M = √(tr M + 2√det M).
    s1, s2 = np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 4.0]])
    # M = S1 S2 = [[2, 4], [1, 8]]: tr 10, det 12; |Δμ|² = 1 + 4; tr S1 = 4, tr S2 = 5
    expected = 5 + 4 + 5 - 2 * math.sqrt(10 + 2 * math.sqrt(12))
    assert expected == pytest.approx(5.77122, abs=1e-5)
    assert frechet_distance([0.0, 0.0], s1, [1.0, 2.0], s2) == pytest.approx(expected, abs=1e-9)


def test_fid_from_hand_made_feature_sets_with_known_sample_statistics():
    cross = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], float)
    a = cross  # mean (0, 0); unbiased covariance = diag(2, 2)/3
    b = np.array([3.0, 4.0]) + 2 * cross  # mean (3, 4); covariance diag(8, 8)/3
    mean, cov = gaussian_statistics(b)
    np.testing.assert_allclose(mean, [3, 4])
    np.testing.assert_allclose(cov, np.eye(2) * 8 / 3)
    # |Δμ|² = 25; per axis (√(2/3) - √(8/3))² = 2/3  ->  25 + 4/3
    assert fid_from_features(a, b) == pytest.approx(25 + 4 / 3, abs=1e-9)
    assert fid_from_features(b, b.copy()) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InputError, match="at least 2"):
        fid_from_features(a[:1], b)


def test_fid_with_fewer_images_than_features_matches_hand_computation_and_the_covariance_route():
    # 2 images of 3 features (the usual case: a chapter has far fewer pages than 2048 features)
    a = np.array([[1.0, 0, 0], [-1, 0, 0]])  # mean 0, covariance diag(2, 0, 0)
    across = np.array([[0.0, 2, 1], [0, -2, 1]])  # mean (0, 0, 1), covariance diag(0, 8, 0): S1 S2 = 0
    along = 2 * a  # covariance diag(8, 0, 0): tr √(S1 S2) = √16 = 4
    assert fid_from_features(a, across) == pytest.approx(1 + 2 + 8, abs=1e-9)
    assert fid_from_features(a, along) == pytest.approx(2 + 8 - 2 * 4, abs=1e-9)  # (√2 - √8)² = 2
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 6)), 1.5 * rng.normal(size=(7, 6)) + 0.3
    assert fid_from_features(x, y) == pytest.approx(
        frechet_distance(*gaussian_statistics(x), *gaussian_statistics(y)), rel=1e-7)


def test_tf1_resize_matches_hand_computed_samples():
    import torch

    from engine.evaluation.inception import resize_like_tf1

    image = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    # out i samples in i·2/4 = 0, .5, 1, 1.5; above the last pixel the sample is clamped to it
    expected = [[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]]
    np.testing.assert_allclose(resize_like_tf1(image, 4)[0, 0].numpy(), expected)


def test_inception_weights_are_never_downloaded_and_the_error_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelError) as error:
        find_inception_weights()
    message = str(error.value)
    assert INCEPTION_URL in message and "never downloads" in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in message
    with pytest.raises(ModelError, match="does not exist"):
        find_inception_weights(tmp_path / "nowhere.pth")


def test_inception_weights_are_found_in_the_torch_hub_cache_or_a_given_folder(tmp_path, monkeypatch):
    hub = tmp_path / "torch-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    (hub / INCEPTION_FILENAMES[1]).write_bytes(b"x")  # torch-fidelity's name of the same file
    assert find_inception_weights() == hub / INCEPTION_FILENAMES[1]
    assert find_inception_weights(hub) == hub / INCEPTION_FILENAMES[1]


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """A stand-in for pt_inception-2015-12-05: the real network class, random weights and
    batch-norm statistics, saved as a plain .pth state dict like the published file."""
    import torch

    from engine.evaluation.inception import build_fid_inception

    torch.manual_seed(0)
    network = build_fid_inception()
    state = network.state_dict()
    for key, value in state.items():
        if key.endswith("running_var") or key.endswith("bn.weight"):
            state[key] = torch.rand_like(value) + 0.5
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            state[key] = torch.randn_like(value) * 0.1
    path = tmp_path_factory.mktemp("inception") / "stand-in-inception.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    return path


def test_inception_stand_in_loads_strictly_and_gives_2048_features_per_image(inception_weights, tmp_path):
    import torch

    from engine.evaluation.fid import InceptionFeatures, load_inception

    features = InceptionFeatures(inception_weights, batch_size=2)
    images = [random_image(4, size=(40, 32)), random_image(5, size=(40, 32)), random_image(6, size=(33, 50))]
    rows = features(images)
    assert rows.shape == (3, 2048) and np.isfinite(rows).all()
    # batching and image size do not change an image's features (each is resized to 299 alone)
    np.testing.assert_allclose(features(images[2:]), rows[2:], rtol=1e-5, atol=1e-6)
    bad = tmp_path / "wrong.pth"
    torch.save({"layers.0.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ModelError, match="missing key"):
        load_inception(bad)


# --- AS ------------------------------------------------------------------------------------


def _write_clip_l14_stand_in(folder):
    """A tiny CLIP vision tower with ViT-L/14's 768-d projection, saved like a hub folder."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=4, image_size=224, patch_size=32, projection_dim=768)
    CLIPVisionModelWithProjection(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def aesthetic_files(tmp_path_factory):
    """Random head weights in the official .pth layout, and the tiny 768-d CLIP."""
    import torch

    root = tmp_path_factory.mktemp("aesthetic")
    sizes = [(768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    generator = torch.Generator().manual_seed(1)
    state = {}
    for index, (n_in, n_out) in zip((0, 2, 4, 6, 7), sizes):
        state[f"layers.{index}.weight"] = torch.randn(n_out, n_in, generator=generator) / math.sqrt(n_in)
        state[f"layers.{index}.bias"] = torch.randn(n_out, generator=generator)
    torch.save(state, root / "sac+logos+ava1-l14-linearMSE.pth")
    return root / "sac+logos+ava1-l14-linearMSE.pth", _write_clip_l14_stand_in(root / "clip-l14"), state


def hand_forward(state, vector) -> float:
    """The predictor by hand: normalise, then five affine maps (no activations; dropout is off)."""
    x = np.asarray(vector, np.float64)
    x = x / np.linalg.norm(x)
    for index in (0, 2, 4, 6, 7):
        x = state[f"layers.{index}.weight"].double().numpy() @ x + state[f"layers.{index}.bias"].double().numpy()
    return float(x[0])


def test_aesthetic_head_matches_a_hand_computed_forward_and_normalises_its_input(aesthetic_files):
    from engine.evaluation.aesthetic import AestheticScorer

    head_path, clip_dir, state = aesthetic_files
    scorer = AestheticScorer(head_path, clip_dir)
    vectors = np.random.default_rng(7).normal(size=(2, 768))
    scores = scorer.score_embeddings(np.stack([vectors[0], 3 * vectors[0], vectors[1]]))
    assert scores[0] == pytest.approx(hand_forward(state, vectors[0]), abs=1e-4)
    assert scores[1] == pytest.approx(scores[0], abs=1e-5)  # only the direction counts
    assert scores[2] == pytest.approx(hand_forward(state, vectors[1]), abs=1e-4)
    # on images: the head applied to the CLIP embeddings of the image
    image = Image.fromarray(random_image(8))
    embedding = scorer.embedder.embed([image])[0]
    assert scorer([image])[0] == pytest.approx(hand_forward(state, embedding), abs=1e-4)


def test_aesthetic_safetensors_head_loads_and_wrong_files_are_clear_model_errors(aesthetic_files, clip_models_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    from engine.evaluation.aesthetic import AestheticScorer, find_head_weights

    head_path, clip_dir, state = aesthetic_files
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "head.safetensors")
    vector = np.ones(768)
    assert AestheticScorer(tmp_path / "head.safetensors", clip_dir).score_embeddings(vector[None])[0] == \
        pytest.approx(hand_forward(state, vector), abs=1e-4)
    wrong = dict(state, **{"layers.0.weight": torch.zeros(1024, 512)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ModelError, match=r"layers\.0\.weight file \[1024, 512\] vs model \[1024, 768\]"):
        AestheticScorer(tmp_path / "wrong.pth", clip_dir)
    with pytest.raises(ModelError, match="needs CLIP ViT-L/14"):  # the 32-d retrieval encoder
        AestheticScorer(head_path, clip_models_dir / "colorflow" / "image_encoder")
    with pytest.raises(ModelError, match="improved-aesthetic-predictor"):
        find_head_weights()  # nothing in the (test-private) evaluation folder


def test_aesthetic_clip_is_looked_up_offline_in_the_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from engine.evaluation.aesthetic import CLIP_REPO, find_aesthetic_clip

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match=f"hf download {CLIP_REPO}"):
        find_aesthetic_clip()
    repo = tmp_path / "hub" / ("models--" + CLIP_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = _write_clip_l14_stand_in(repo / "snapshots" / ("0" * 40))
    assert find_aesthetic_clip() == snapshot


# --- folders and reports -------------------------------------------------------------------


def save(folder, name, array):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name)


@pytest.fixture
def page_folders(tmp_path):
    """gt 1, 2, 10 (+ extra, never predicted); predictions as lossless files of other types."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    save(gt, "1.png", constant((100, 50, 200)))
    save(pred, "1.bmp", constant((120, 50, 180)))
    save(gt, "2.png", constant((10, 20, 30)))
    save(pred, "2.tiff", constant((15, 25, 35)))
    save(gt, "10.png", random_image(9))
    save(pred, "10.png", random_image(9))
    save(gt, "extra.png", constant((0, 0, 0)))
    save(pred, "orphan.png", constant((0, 0, 0)))
    return pred, gt


def test_folders_pair_by_name_in_natural_order_and_list_unpaired_files(page_folders):
    pairing = pair_folders(*page_folders)
    assert [name for name, _, _ in pairing.pairs] == ["1", "2", "10"]
    assert pairing.pairs[0][1].name == "1.bmp" and pairing.pairs[0][2].name == "1.png"
    assert pairing.missing_predictions == ["extra"]
    assert pairing.missing_ground_truth == ["orphan"]


def test_evaluate_folders_per_image_and_means_from_hand_computation(page_folders):
    report = evaluate_folders(*page_folders, metrics="psnr,ssim", method="Ours", input_style="Screenstyle")
    values = {r.name: r.values for r in report.images}
    # 1: offsets (20, 0, -20) -> MSE 800/3; 2: offsets 5 everywhere -> MSE 25; 10: identical
    assert values["1"]["psnr"] == pytest.approx(10 * math.log10(255**2 * 3 / 800), abs=1e-9)
    assert values["2"]["psnr"] == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    assert values["10"]["psnr"] == math.inf
    ssim_1 = (ssim_of_constants(100, 120) + 1 + ssim_of_constants(200, 180)) / 3
    ssim_2 = (ssim_of_constants(10, 15) + ssim_of_constants(20, 25) + ssim_of_constants(30, 35)) / 3
    assert values["1"]["ssim"] == pytest.approx(ssim_1, abs=1e-6)
    assert values["2"]["ssim"] == pytest.approx(ssim_2, abs=1e-6)
    assert values["10"]["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert report.summary["ssim"] == pytest.approx((ssim_1 + ssim_2 + 1) / 3, abs=1e-6)
    assert report.summary["psnr"] == math.inf  # one identical pair makes the mean infinite

    data = json.loads(report.to_json())  # strict JSON: no Infinity literal
    assert data["summary"]["psnr"] == "inf" and data["images"][2]["psnr"] == "inf"
    assert data["missing_predictions"] == ["extra"] and data["missing_ground_truth"] == ["orphan"]
    assert data["count"] == 3 and data["metrics"] == ["psnr", "ssim"]
    again = EvaluationReport.from_dict(data)
    assert again.summary["psnr"] == math.inf and again.images[1].values == values["2"]

    markdown = report.to_markdown()
    lines = markdown.splitlines()
    assert lines[0] == "| Method | Input | CLIP-IS↑ | FID↓ | PSNR↑ | SSIM↑ | AS↑ |"
    assert lines[2] == f"| Ours | Screenstyle | - | - | ∞ | {report.summary['ssim']:.4f} | - |"
    assert f"| 2 | {values['2']['psnr']:.2f} | {ssim_2:.4f} |" in markdown
    assert "No prediction for: extra" in markdown and "No ground truth for: orphan" in markdown


def test_results_table_bolds_the_best_value_per_input_style_like_table_1():
    def row(method, style, clip_is, fid, psnr_value, ssim_value, aesthetic):
        summary = {"clip-is": clip_is, "fid": fid, "psnr": psnr_value, "ssim": ssim_value, "as": aesthetic}
        return EvaluationReport(tuple(summary), [], summary, method, style)

    table = results_table([  # rows of the paper's Table 1
        row("MC-v2", "Screenstyle", 0.8632, 48.37, 13.50, 0.6987, 4.753),
        row("Ours", "Screenstyle", 0.9419, 13.37, 25.88, 0.9541, 4.924),
        row("Ours", "Grayscale", 0.9433, 12.17, 26.01, 0.9579, 5.011),
    ]).splitlines()
    assert table[2] == "| MC-v2 | Screenstyle | 0.8632 | 48.37 | 13.50 | 0.6987 | 4.753 |"
    assert table[3] == "| Ours | Screenstyle | **0.9419** | **13.37** | **25.88** | **0.9541** | **4.924** |"
    assert table[4] == "| Ours | Grayscale | 0.9433 | 12.17 | 26.01 | 0.9579 | 5.011 |"  # alone in its style


def test_evaluate_folders_input_errors_name_the_problem(tmp_path, page_folders):
    pred, gt = page_folders
    save(pred, "2.tiff", constant((15, 25, 35), size=(20, 16)))
    with pytest.raises(InputError, match=r"2: prediction .*2\.tiff is 20x16 but ground truth .*2\.png is 24x16"):
        evaluate_folders(pred, gt, metrics="psnr")
    save(pred, "2.png", constant((1, 1, 1)))
    with pytest.raises(InputError, match="share the name '2'"):
        evaluate_folders(pred, gt, metrics="psnr")
    save(tmp_path / "other", "a.png", constant((1, 1, 1)))
    with pytest.raises(InputError, match="no image in"):
        evaluate_folders(tmp_path / "other", gt, metrics="psnr")
    with pytest.raises(InputError, match="does not exist"):
        evaluate_folders(tmp_path / "missing", gt, metrics="psnr")


def test_evaluate_folders_fails_on_missing_weights_before_loading_any_model(page_folders, monkeypatch, tmp_path):
    import engine.rap.embedding as embedding

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the weight files were checked")

    monkeypatch.setattr(embedding.ClipEmbedder, "__init__", must_not_load)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(ModelError, match="pt_inception-2015-12-05-6726825d.pth"):
        evaluate_folders(*page_folders, metrics="clip-is,fid", models=MetricModels(clip_models="tiny"))


def test_evaluate_folders_all_five_metrics_with_stand_in_models(
    tmp_path, clip_models_dir, inception_weights, aesthetic_files
):
    from engine.evaluation.aesthetic import AestheticScorer
    from engine.evaluation.fid import InceptionFeatures

    head_path, clip_dir, state = aesthetic_files
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i in range(3):
        save(gt, f"p{i}.png", random_image(20 + i))
        save(pred, f"p{i}.png", random_image(20 + i) if i == 0 else random_image(30 + i))
    models = MetricModels(clip_models=str(clip_models_dir), fid_weights=inception_weights,
                          aesthetic_weights=head_path, aesthetic_clip=clip_dir, batch_size=2)
    seen = []
    report = evaluate_folders(pred, gt, models=models, method="Ours", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 3), (3, 3)]
    assert report.metrics == ("clip-is", "fid", "psnr", "ssim", "as")
    first = report.images[0].values
    assert first["clip-is"] == pytest.approx(1.0, abs=1e-6) and first["psnr"] == math.inf
    # FID of the set equals the Fréchet distance of the two sets' Inception features
    features = InceptionFeatures(inception_weights)
    preds = [np.asarray(Image.open(pred / f"p{i}.png")) for i in range(3)]
    gts = [np.asarray(Image.open(gt / f"p{i}.png")) for i in range(3)]
    assert report.summary["fid"] == pytest.approx(fid_from_features(features(preds), features(gts)), rel=1e-6)
    assert report.summary["fid"] > 0
    # AS: the hand-computed head on each prediction's CLIP ViT-L/14 embedding, averaged
    embedder = AestheticScorer(head_path, clip_dir).embedder
    expected = [hand_forward(state, e) for e in embedder.embed([Image.fromarray(p) for p in preds])]
    assert [r.values["as"] for r in report.images] == pytest.approx(expected, abs=1e-4)
    assert report.summary["as"] == pytest.approx(np.mean(expected), abs=1e-4)
    # a set compared with itself is at FID 0
    same = evaluate_folders(gt, gt, metrics="fid", models=models)
    assert same.summary["fid"] == pytest.approx(0.0, abs=1e-6)
