"""The local Hub server speaks the protocol the real huggingface_hub / transformers clients use.

These tests use only the ecosystem's own client calls; if one of them needs an endpoint the server
does not implement, or gets back something the real Hub would not send, they fail here first rather
than in a push test.
"""
from __future__ import annotations

import os

import pytest

from tests.hub_server import hub_server  # noqa: F401  (pytest fixture)

REPO = "sft-tester/server-check"


def _folder(tmp_path):
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("plain text file\n")
    (folder / "sub" / "config.json").write_text('{"a": 1}')
    (folder / "weights.safetensors").write_bytes(os.urandom(4096))  # LFS by .gitattributes
    (folder / "blob.dat").write_bytes(b"\x00\x01binary" * 50)  # LFS because it is binary
    return folder


def test_upload_folder_round_trip_is_byte_exact(hub_server, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    api = HfApi()
    api.create_repo(REPO, private=True)
    folder = _folder(tmp_path)
    api.upload_folder(folder_path=folder, repo_id=REPO, commit_message="first")

    expected = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert sorted(api.list_repo_files(REPO)) == sorted([".gitattributes", *expected])
    assert {k: v for k, v in hub_server.files(REPO).items() if k != ".gitattributes"} == expected

    siblings = {s.rfilename: s for s in api.model_info(REPO, files_metadata=True).siblings}
    assert siblings["weights.safetensors"].lfs is not None and siblings["blob.dat"].lfs is not None
    assert siblings["notes.txt"].lfs is None
    assert siblings["weights.safetensors"].lfs.size == 4096

    path = hf_hub_download(REPO, "weights.safetensors")
    assert open(path, "rb").read() == expected["weights.safetensors"]
    snapshot = snapshot_download(REPO, cache_dir=tmp_path / "other-cache")
    for name, data in expected.items():
        assert open(os.path.join(snapshot, name), "rb").read() == data


def test_missing_file_is_entry_not_found(hub_server):
    from huggingface_hub import HfApi, file_exists, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
    from transformers.utils.hub import cached_file

    HfApi().create_repo(REPO)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "nope.json")
    assert not file_exists(REPO, "nope.json")
    assert file_exists(REPO, ".gitattributes")
    # transformers skips optional files on exactly this answer
    assert cached_file(REPO, "tokenizer.json", _raise_exceptions_for_missing_entries=False) is None
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("sft-tester/does-not-exist", "config.json")


def test_unchanged_files_are_not_committed_again(hub_server, tmp_path):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(REPO)
    folder = _folder(tmp_path)
    first = api.upload_folder(folder_path=folder, repo_id=REPO)
    second = api.upload_folder(folder_path=folder, repo_id=REPO)  # preupload reports the same oids
    assert second.oid == first.oid
    (folder / "notes.txt").write_text("changed\n")
    third = api.upload_folder(folder_path=folder, repo_id=REPO)
    assert third.oid != first.oid
    assert hub_server.files(REPO, first.oid)["notes.txt"] == b"plain text file\n"  # history kept


def test_permissions(hub_server, tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    writer, reader, anonymous = HfApi(), HfApi(token=hub_server.read_token), HfApi(token=False)
    writer.create_repo(REPO, private=True)
    writer.create_repo(f"{hub_server.org}/shared")  # a writing member of the organisation
    assert reader.whoami()["auth"]["accessToken"]["role"] == "read"

    reader.auth_check(REPO)  # the read token can read the private repo...
    with pytest.raises(HfHubHTTPError) as err:  # ...but not write to it
        reader.auth_check(REPO, write=True)
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError):
        reader.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO)
    with pytest.raises(HfHubHTTPError) as err:
        reader.create_repo("sft-tester/new")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        writer.create_repo("someone-else/theirs")
    assert err.value.response.status_code == 403
    with pytest.raises(RepositoryNotFoundError):  # private repos are invisible without a token
        anonymous.model_info(REPO)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_not_a_token").whoami()
    assert err.value.response.status_code == 401

    writer.create_repo(REPO, exist_ok=True)
    writer.delete_repo(REPO)
    assert not writer.repo_exists(REPO)


def test_branches_and_revisions(hub_server):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RevisionNotFoundError

    api = HfApi()
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=b"main\n", path_in_repo="which.txt", repo_id=REPO)
    api.create_branch(REPO, branch="experiment")
    api.upload_file(path_or_fileobj=b"experiment\n", path_in_repo="which.txt", repo_id=REPO,
                    revision="experiment")
    assert {b.name for b in api.list_repo_refs(REPO).branches} == {"main", "experiment"}
    assert open(hf_hub_download(REPO, "which.txt"), "rb").read() == b"main\n"
    assert open(hf_hub_download(REPO, "which.txt", revision="experiment"), "rb").read() == b"experiment\n"
    assert api.model_info(REPO, revision="experiment").sha != api.model_info(REPO).sha
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "which.txt", revision="no-such-branch")


def test_readme_metadata_is_validated_and_exposed(hub_server):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(REPO)
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [unclosed\n---\n", path_in_repo="README.md",
                        repo_id=REPO)
    card = (b"---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: text-classification\n"
            b"tags: [sft-hub]\n---\n# model\n")
    api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id=REPO)
    info = api.model_info(REPO)
    assert info.pipeline_tag == "text-classification" and info.library_name == "transformers"
    assert info.card_data.license == "apache-2.0" and "sft-hub" in info.tags


def test_transformers_push_to_hub_and_from_pretrained(hub_server):
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    model.push_to_hub(REPO)  # transformers' own upload path

    loaded = AutoModelForSequenceClassification.from_pretrained(REPO).eval()
    expected = model.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())
    ids = torch.tensor([[1, 5, 7, 2]])
    torch.testing.assert_close(model(ids).logits, loaded(ids).logits)
