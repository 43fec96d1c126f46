"""Training crops (shuffle / disjoint / paired), reproducible randomness, evaluation datasets, dataio_prep."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataloader import make_dataloader

from upcycle_se.data.pipeline import (CycleTrainDataset, dataio_prep, load_manifest, make_eval_dataset,
                                      make_train_dataset)
from upcycle_se.data.prepare import prepare_folders, prepare_voicebank
from upcycle_se.errors import ConfigError, DataError

SR = 16000
TRAIN_SPKS = ("p226", "p227", "p228", "p229", "p230", "p287")  # p226/p287 go to validation
CROP = 4000


def make_corpus(root: Path, n_utts: int = 3, seed: int = 0) -> Path:
    """16 kHz VoiceBank layout; clean = white noise (so any misalignment decorrelates), noisy = clean + 1%."""
    rng = np.random.default_rng(seed)
    for clean_dir, noisy_dir, spks in (("clean_trainset_wav", "noisy_trainset_wav", TRAIN_SPKS),
                                       ("clean_testset_wav", "noisy_testset_wav", ("p232",))):
        (root / clean_dir).mkdir(parents=True)
        (root / noisy_dir).mkdir(parents=True)
        for spk in spks:
            for k in range(1, n_utts + 1):
                clean = 0.2 * rng.standard_normal(int(rng.integers(8000, 16000)))
                noisy = clean + 0.002 * rng.standard_normal(clean.size)
                sf.write(root / clean_dir / f"{spk}_{k:03d}.wav", clean, SR, subtype="FLOAT")
                sf.write(root / noisy_dir / f"{spk}_{k:03d}.wav", noisy, SR, subtype="FLOAT")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = make_corpus(tmp_path_factory.mktemp("corpus") / "VoiceBank")
    save = tmp_path_factory.mktemp("prep")
    return root, save, prepare_voicebank(root, save)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def epoch_items(ds, epoch=None):
    if epoch is not None:
        ds.set_epoch(epoch)
    return [ds[i] for i in range(len(ds))]


def spk(uid: str) -> str:
    return uid.split("_")[0]


def test_paired_crops_are_aligned_and_exact(prepared):
    root, save, out = prepared
    ds = make_train_dataset(out["train"], root, unpaired="paired", crop_samples=CROP, seed=3)
    assert len(ds) == 12  # 4 training speakers x 3
    full = load_manifest(out["train"], root)
    starts = []
    for item in epoch_items(ds, 0):
        assert item["noisy_sig"].shape == item["clean_sig"].shape == (CROP,)
        assert item["clean_id"] == item["id"]
        assert corr(item["noisy_sig"], item["clean_sig"]) > 0.99  # same offset in both files
        whole, _ = sf.read(full[item["id"]]["clean_wav"], dtype="float32")
        start = int(np.argmax(np.correlate(whole, item["clean_sig"].numpy(), mode="valid")))
        np.testing.assert_array_equal(whole[start:start + CROP], item["clean_sig"].numpy())
        starts.append(start)
    assert len(set(starts)) >= 10 and max(starts) > 1000  # random offsets, not always the file start


def test_shuffle_pairs_noisy_with_other_utterances(prepared):
    root, save, out = prepared
    ds = make_train_dataset(out["train"], root, unpaired="shuffle", crop_samples=CROP, seed=3)
    partners = []
    for epoch in range(4):
        for item in epoch_items(ds, epoch):
            assert item["clean_id"] != item["id"]
            assert abs(corr(item["noisy_sig"], item["clean_sig"])) < 0.2  # an unrelated recording
            assert item["noisy_sig"].shape == item["clean_sig"].shape == (CROP,)
            partners.append((item["id"], item["clean_id"]))
    assert len({c for _, c in partners}) == 12  # every clean utterance gets drawn
    assert len(set(partners)) > 30  # pairings change from epoch to epoch (48 draws)


def test_disjoint_speaker_halves_never_overlap(prepared):
    root, save, out = prepared
    ds = make_train_dataset(out["train"], root, unpaired="disjoint", crop_samples=CROP, seed=3)
    assert len(ds.noisy_speakers) == 2 and len(ds.clean_speakers) == 2
    assert sorted(ds.noisy_speakers + ds.clean_speakers) == ["p227", "p228", "p229", "p230"]
    assert len(ds) == 6  # one epoch = the noisy half's utterances
    noisy_spk, clean_spk = set(), set()
    for epoch in range(5):
        for item in epoch_items(ds, epoch):
            noisy_spk.add(spk(item["id"]))
            clean_spk.add(spk(item["clean_id"]))
    assert noisy_spk == set(ds.noisy_speakers) and clean_spk == set(ds.clean_speakers)
    assert not noisy_spk & clean_spk
    other = make_train_dataset(out["train"], root, unpaired="disjoint", crop_samples=CROP, seed=3)
    assert other.clean_speakers == ds.clean_speakers  # the split is fixed by the seed


def test_draws_reproducible_per_seed_and_epoch(prepared):
    root, save, out = prepared

    def crops(ds, epoch=None):
        items = epoch_items(ds, epoch)
        return torch.stack([i["noisy_sig"] for i in items]), [i["clean_id"] for i in items]

    a = make_train_dataset(out["train"], root, crop_samples=CROP, seed=11)
    b = make_train_dataset(out["train"], root, crop_samples=CROP, seed=11)
    c = make_train_dataset(out["train"], root, crop_samples=CROP, seed=12)
    a0, b0, c0 = crops(a, 0), crops(b, 0), crops(c, 0)
    assert torch.equal(a0[0], b0[0]) and a0[1] == b0[1]
    assert not torch.equal(a0[0], c0[0])
    a1 = crops(a, 1)
    assert not torch.equal(a0[0], a1[0]) and a0[1] != a1[1]
    assert torch.equal(crops(a, 0)[0], a0[0])  # a resumed run redraws epoch 0 exactly
    # Without set_epoch the draws still change from one pass to the next.
    fresh = make_train_dataset(out["train"], root, crop_samples=CROP, seed=11)
    p1, p2 = crops(fresh), crops(fresh)
    assert not torch.equal(p1[0], p2[0])


def test_dataloader_workers_draw_like_the_main_process(prepared):
    root, save, out = prepared
    ds = make_train_dataset(out["train"], root, crop_samples=CROP, seed=5)

    def run(num_workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=num_workers, collate_fn=PaddedBatch)
        batches = list(loader)
        return torch.cat([b.noisy_sig.data for b in batches]), torch.cat([b.clean_sig.data for b in batches])

    ds.set_epoch(2)
    serial = run(0)
    ds.set_epoch(2)
    parallel = run(2)
    # Same crops whichever worker fetched an item, and no two items share a random stream.
    assert torch.equal(serial[0], parallel[0]) and torch.equal(serial[1], parallel[1])
    assert len({round(float(x[:8].sum()), 6) for x in serial[0]}) == 12
    # Workers without set_epoch: the loader's per-epoch base seed makes each epoch's crops new.
    loose = make_train_dataset(out["train"], root, crop_samples=CROP, seed=5)
    loader = torch.utils.data.DataLoader(loose, batch_size=4, num_workers=2, collate_fn=PaddedBatch)
    first, second = (torch.cat([b.noisy_sig.data for b in loader]) for _ in range(2))
    assert not torch.equal(first, second)


def test_padded_batches_for_the_brain(prepared):
    root, save, out = prepared
    ds = make_train_dataset(out["train"], root, crop_samples=CROP, seed=1)
    batch = next(iter(make_dataloader(ds, batch_size=4)))  # SpeechBrain picks PaddedBatch for DynamicItemDataset
    assert isinstance(batch, PaddedBatch)
    wav, lens = batch.noisy_sig
    assert wav.shape == (4, CROP) and wav.dtype == torch.float32
    assert torch.equal(lens, torch.ones(4)) and batch.clean_sig.data.shape == (4, CROP)
    assert len(batch.id) == 4 and all(c != i for c, i in zip(batch.clean_id, batch.id))


def test_default_crop_is_2s_and_short_files_are_zero_padded(prepared):
    root, save, out = prepared
    ds = make_train_dataset(out["train"], root, unpaired="paired", seed=0)
    assert ds.crop_samples == 32000
    full = load_manifest(out["train"], root)
    for item in epoch_items(ds, 0)[:4]:
        whole, _ = sf.read(full[item["id"]]["noisy_wav"], dtype="float32")
        n = len(whole)  # 0.5-1 s: shorter than the crop, so it starts at 0 and ends in zeros
        assert item["noisy_sig"].shape == (32000,)
        np.testing.assert_array_equal(item["noisy_sig"][:n].numpy(), whole)
        assert torch.count_nonzero(item["noisy_sig"][n:]) == 0 and torch.count_nonzero(item["clean_sig"][n:]) == 0


def test_eval_dataset_whole_files(prepared):
    root, save, out = prepared
    ds = make_eval_dataset(out["valid"], root)
    assert ds.has_reference and len(ds) == 6
    manifest = json.loads(Path(out["valid"]).read_text())
    for i in range(len(ds)):
        item = ds[i]
        n = round(manifest[item["id"]]["length"] * SR)
        assert item["noisy_sig"].shape == item["clean_sig"].shape == (n,)
        assert corr(item["noisy_sig"], item["clean_sig"]) > 0.99
    batch = PaddedBatch([ds[0], ds[1]])
    n0, n1 = ds[0]["noisy_sig"].shape[0], ds[1]["noisy_sig"].shape[0]
    assert batch.noisy_sig.data.shape == (2, max(n0, n1))
    torch.testing.assert_close(batch.clean_sig.lengths, torch.tensor([n0, n1]) / max(n0, n1))
    assert batch.id == [ds[0]["id"], ds[1]["id"]]


def test_eval_trims_to_the_shorter_side(tmp_path):
    for side, n in (("clean", 1000), ("noisy", 1010)):
        sf.write(tmp_path / f"{side}.wav", np.full(n, 0.5), SR)
    (tmp_path / "m.json").write_text(json.dumps({"u": {"noisy_wav": "{data_root}/noisy.wav",
                                                        "clean_wav": "{data_root}/clean.wav", "length": 0.06}}))
    item = make_eval_dataset(tmp_path / "m.json", tmp_path)[0]
    assert item["noisy_sig"].shape == item["clean_sig"].shape == (1000,)


def test_dataio_prep(prepared):
    root, save, out = prepared
    hparams = {"data_folder": str(root), "save_folder": str(save), "train_annotation": str(out["train"]),
               "valid_annotation": str(out["valid"]), "test_annotation": str(out["test"]),
               "unpaired": "disjoint", "training_length": 0.25, "seed": 9, "sample_rate": SR}
    sets = dataio_prep(hparams)
    assert set(sets) == {"train", "valid", "test"}
    assert isinstance(sets["train"], CycleTrainDataset) and sets["train"].mode == "disjoint"
    assert sets["train"].crop_samples == 4000 and len(sets["valid"]) == 6 and len(sets["test"]) == 3
    assert sets["test"][0]["id"] == "p232_001"
    minimal = dataio_prep({"save_folder": str(save), "crop_samples": 1234})
    assert minimal["train"].mode == "shuffle" and minimal["train"][0]["clean_sig"].shape == (1234,)
    with pytest.raises(DataError, match=r"nope.json: manifest not found"):
        dataio_prep({**hparams, "test_annotation": str(save / "nope.json")})


def test_unpaired_corpus_from_folders(tmp_path):
    """flac at 22.05 kHz, flat clean folder, nested noisy folder, different names: prepare_folders -> pipeline."""
    rng = np.random.default_rng(2)
    data = tmp_path / "mine"
    (data / "clean").mkdir(parents=True)
    for spk_name in ("ann", "bo", "cy", "di"):
        for k in range(3):
            sf.write(data / "clean" / f"{spk_name}_{k}.flac", 0.1 * rng.standard_normal(22050), 22050)
    for spk_name in ("bo", "cy", "di", "ed", "fay"):
        (data / "noisy" / spk_name).mkdir(parents=True)
        for k in range(2):
            sf.write(data / "noisy" / spk_name / f"street{k}.flac", 0.1 * rng.standard_normal(11025), 22050)
    save = tmp_path / "prep"
    out = prepare_folders(data / "clean", data / "noisy", save, paired=False, valid_speakers=["fay"])
    assert out["test"] is None
    train = make_train_dataset(out["train"], crop_samples=CROP, seed=0)  # data_root from prepare_options.json
    assert len(train) == 8  # noisy files of bo, cy, di, ed
    for item in epoch_items(train, 0):
        assert item["id"].startswith("noisy/") and item["clean_id"].startswith("clean/")
        assert item["clean_sig"].shape == item["noisy_sig"].shape == (CROP,)
    disjoint = make_train_dataset(out["train"], crop_samples=CROP, seed=0, unpaired="disjoint")
    assert not set(disjoint.noisy_speakers) & set(disjoint.clean_speakers)
    assert {"ann"} <= set(disjoint.clean_speakers) and {"ed"} <= set(disjoint.noisy_speakers)
    for epoch in range(3):
        for item in epoch_items(disjoint, epoch):
            assert item["id"].split("/")[1] in disjoint.noisy_speakers
            assert item["clean_id"].split("/")[1].split("_")[0] in disjoint.clean_speakers
    valid = make_eval_dataset(out["valid"])
    assert not valid.has_reference and len(valid) == 2
    batch = PaddedBatch([valid[0], valid[1]])
    assert batch.noisy_sig.data.shape == (2, 8000) and "clean_sig" not in valid[0]
    with pytest.raises(DataError, match=r"unpaired='paired' needs entries with both noisy_wav and clean_wav"):
        make_train_dataset(out["train"], unpaired="paired")


def test_bad_pipeline_inputs(prepared, tmp_path):
    root, save, out = prepared
    with pytest.raises(ConfigError, match=r"unpaired must be one of shuffle, disjoint, paired, got 'cycle'"):
        make_train_dataset(out["train"], root, unpaired="cycle")
    with pytest.raises(ConfigError, match="crop_samples must be a positive integer"):
        make_train_dataset(out["train"], root, crop_samples=0)
    with pytest.raises(DataError, match=r"missing.json: manifest not found"):
        make_eval_dataset(tmp_path / "missing.json", root)
    (tmp_path / "m.json").write_text(json.dumps({"u": {"noisy_wav": "{data_root}/x.wav"}}))
    with pytest.raises(DataError, match=r"m.json: uses the placeholder \{data_root\} but no value"):
        make_eval_dataset(tmp_path / "m.json")
    (tmp_path / "one.json").write_text(json.dumps({"p226_001": {"noisy_wav": "a", "clean_wav": "b", "spk": "p226"}}))
    with pytest.raises(DataError, match="disjoint' needs at least 2 training speakers"):
        make_train_dataset(tmp_path / "one.json", unpaired="disjoint")
