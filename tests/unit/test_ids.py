"""distill.ids: time-ordered ids, monotonic within a process ("newest first" is ORDER BY id DESC)."""

from __future__ import annotations

from distill.ids import new_id


def test_ids_made_back_to_back_sort_in_the_order_they_were_made() -> None:
    made = [new_id("whd") for _ in range(2000)]  # many share a millisecond
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_an_id_is_a_prefix_and_26_base32_characters() -> None:
    prefix, _, body = new_id("job").partition("_")
    assert prefix == "job" and len(body) == 26
    assert set(body) <= set("0123456789abcdefghjkmnpqrstvwxyz")
