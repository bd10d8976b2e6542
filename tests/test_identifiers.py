from pathways.identifiers import (
    is_test_nhs_number,
    is_valid_nhs_number,
    nhs_check_digit,
    pseudonymous_key,
)


def test_nhs_number_worked_example_from_the_data_dictionary():
    # NHS Data Model and Dictionary worked example: 943 476 5919.
    # 9×10 + 4×9 + 3×8 + 4×7 + 7×6 + 6×5 + 5×4 + 9×3 + 1×2 = 299; 299 mod 11 = 2; 11 − 2 = 9.
    assert nhs_check_digit("943476591") == 9
    assert is_valid_nhs_number("943 476 5919")
    assert not is_valid_nhs_number("9434765918")


def test_check_digit_ten_means_no_valid_number():
    # A stem whose weighted sum ≡ 1 (mod 11) gives check 10: no number is issued with it.
    stem = next(f"{n:09d}" for n in range(100000000, 100001000) if nhs_check_digit(f"{n:09d}") is None)
    assert not any(is_valid_nhs_number(stem + str(d)) for d in range(10))


def test_test_range_and_shape():
    assert is_test_nhs_number("9990000018") == is_valid_nhs_number("9990000018")
    assert not is_test_nhs_number("9434765919")  # valid, but not from the 999 test range
    assert not is_valid_nhs_number("12345")
    assert not is_valid_nhs_number("abcdefghij")


def test_pseudonymous_keys_are_stable_and_namespaced():
    a = pseudonymous_key(b"k", "patient", "9434765919")
    assert a == pseudonymous_key(b"k", "patient", "9434765919")
    assert a != pseudonymous_key(b"k", "study", "9434765919")
    assert a != pseudonymous_key(b"other", "patient", "9434765919")
    assert "9434765919" not in a and a.startswith("P-")
