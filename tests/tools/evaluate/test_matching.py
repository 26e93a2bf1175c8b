"""The reference match: credits an answer that states the reference, and not one that only sounds close."""

from __future__ import annotations

import pytest

from llmserve.tools.evaluate.matching import reference_forms, reference_match


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ("La capital de Francia es París.", "París"),
        ("El capital de Argentina es Buenos Aires.", "Buenos Aires"),  # EM 0, F1 0.50 before
        ("Es el OCÉANO pacífico, sin duda", "El océano Pacífico"),
        ("7 por 8 son 56.", "56"),
        ("La respuesta es doce.", "12"),
        ("Un día tiene 86,400 segundos", "86400"),
        ("0.5 + 0.25 = 0,75", "0,75"),
        ("El agua hierve a 100 °C", "100 grados Celsius"),
        ("Backpropagation computes the gradients", "La retropropagación (backpropagation)"),
        ("Se llama retropropagación.", "La retropropagación (backpropagation)"),
        ("H2O", "H2O"),
    ],
)
def test_an_answer_that_states_the_reference_matches(answer, reference):
    match = reference_match(answer, reference)
    assert match.score == 1.0 and match.reason.startswith("correcta"), match


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ("El capital de Francia es La Ciudad de Francia.", "París"),  # similarity 0.4-0.5 before
        ("Parisino", "París"),  # whole words only
        ("La respuesta es 11.", "12"),
        ("12 x 8 = 104", "96"),
        ("No lo sé.", "56"),
        ("Buenos días", "Buenos Aires"),
        ("Aires de Buenos", "Buenos Aires"),  # in order
        ("", "París"),
    ],
)
def test_a_wrong_answer_does_not_match_and_says_why(answer, reference):
    match = reference_match(answer, reference)
    assert match.score == 0.0 and match.reason.startswith("incorrecta"), match


def test_the_reason_names_what_was_looked_for():
    assert "su último número es 11, la referencia 12" in reference_match("144 / 12 = 11", "12", "¿144 / 12?").reason
    assert "no da ningún número" in reference_match("No lo sé.", "56").reason
    assert "«paris»" in reference_match("Roma", "París").reason


def test_a_parenthesis_is_another_accepted_form():
    assert reference_forms("El error cuadrático medio (MSE)") == ["error cuadratico medio", "mse"]
    assert reference_forms("París") == ["paris"]


@pytest.mark.parametrize(
    ("answer", "reference", "question", "score"),
    [
        ("Water boils at 100°C (212°F).", "100 degrees Celsius", "At how many degrees does water boil?", 1.0),
        ("144 / 12 = 11", "12", "How much is 144 divided by 12?", 0.0),  # 12 is the question's own number
        ("144 / 12 = 12", "12", "How much is 144 divided by 12?", 1.0),
        ("Convolutional Neural Networks (CNNs) are used.", "A convolutional neural network (CNN)", "", 1.0),
        ("Binary Crossentropy (BCE) is the usual loss.", "Cross-entropy", "", 1.0),
        ("Class", "Clas", "", 0.0),  # a double s is not a plural
    ],
)
def test_numbers_outside_the_question_plurals_and_joined_hyphens(answer, reference, question, score):
    assert reference_match(answer, reference, question).score == score
