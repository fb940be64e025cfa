"""The quality suites' data: files load, every reference is recomputed, and the grading is honest.

Each numeric item's `check` expression is evaluated here (with numpy, exact fractions and the helpers
below) and must reproduce the item's reference answer. The grading must give 1 to a response built from
the reference, 0 to the prompt echoed back or an empty response, and about 0 to garbage.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import re
from fractions import Fraction
from math import comb, factorial
from pathlib import Path

import numpy as np
import pytest

from harness.errors import SuiteDataError
from harness.quality.scoring import (
    Item,
    accuracy,
    grade,
    reference_response,
    reference_value,
    within_tolerance,
)
from harness.quality.suite_data import list_suites, load_suite

SUITES = {name: load_suite(name) for name in list_suites()}
ALL_ITEMS = [
    pytest.param(suite, item, id=f"{suite.name}/{item.id}")
    for suite in SUITES.values()
    for item in suite.items
]
NUMERIC_ITEMS = [param for param in ALL_ITEMS if param.values[1].grader == "numeric"]


# ---------------------------------------------------------------- geometry helpers (math suite)


def ball_volume(n: int, radius: float = 1.0) -> float:
    """Volume of the n-ball: pi^(n/2) / Gamma(n/2 + 1) * r^n."""
    return math.pi ** (n / 2) / math.gamma(n / 2 + 1) * radius**n


def sphere_area(n: int) -> float:
    """(n-1)-dimensional volume of the unit sphere in R^n: d/dr of the ball volume at r = 1."""
    return n * ball_volume(n)


def cube_faces(n: int, k: int) -> int:
    """Number of k-dimensional faces of the n-cube, counted by brute force over face descriptions:
    each coordinate is free, fixed at 0 or fixed at 1, with exactly k free."""
    return sum(1 for face in itertools.product("01*", repeat=n) if face.count("*") == k)


def tesseract_section_vertices(level: float) -> np.ndarray:
    """Vertices of [0,1]^4 ∩ {x1+x2+x3+x4 = level}: where the cube's edges cross the hyperplane."""
    points = []
    for corner in itertools.product((0.0, 1.0), repeat=4):
        for axis in range(4):
            if corner[axis] == 0.0:
                start = np.array(corner)
                t = level - start.sum()  # the edge runs start + t * e_axis, t in [0, 1]
                if 0.0 <= t <= 1.0:
                    points.append(start + t * np.eye(4)[axis])
    return np.unique(np.round(points, 12), axis=0)


def section_edge_length(level: float) -> float:
    """Edge of the section: the shortest vertex distance, after checking the polytope is a regular
    octahedron (each vertex has 4 neighbours at that distance and one opposite vertex at sqrt(2) times it)."""
    vertices = tesseract_section_vertices(level)
    distances = np.linalg.norm(vertices[:, None] - vertices[None], axis=-1)
    edge = distances[distances > 1e-9].min()
    for row in distances:
        assert np.isclose(row, edge).sum() == 4
        assert np.isclose(row, edge * math.sqrt(2)).sum() == 1
    return float(edge)


def section_volume(level: float) -> float:
    """3-volume of the section, from the Irwin-Hall density of x1+...+x4 (uniform x_i) at `level`,
    times |(1,1,1,1)| = 2 (the slab between two level sets is 1/|normal| thick)."""
    density = sum((-1) ** k * comb(4, k) * max(level - k, 0.0) ** 3 for k in range(5)) / factorial(3)
    return density * 2.0


def section_inradius(level: float) -> float:
    """Distance, inside the hyperplane, from the centre to the nearest facet x_i = 0 or x_i = 1."""
    centre = np.full(4, level / 4)
    normal = np.ones(4) / 2.0
    radii = []
    for axis in range(4):
        direction = np.eye(4)[axis] - normal * (normal @ np.eye(4)[axis])  # e_i projected onto the plane
        rate = direction[axis] / np.linalg.norm(direction)  # change of x_i per unit length
        radii += [(1 - centre[axis]) / rate, centre[axis] / rate]
    return float(min(radii))


# ---------------------------------------------------------------- linear-algebra helpers (quantum suite)

PAULI = {
    "x": np.array([[0, 1], [1, 0]], dtype=complex),
    "y": np.array([[0, -1j], [1j, 0]], dtype=complex),
    "z": np.array([[1, 0], [0, -1]], dtype=complex),
}


def so_generator(n: int, i: int, j: int) -> np.ndarray:
    """(L_ij)_ab = δ_ia δ_jb - δ_ib δ_ja (0-based i, j)."""
    generator = np.zeros((n, n))
    generator[i, j], generator[j, i] = 1.0, -1.0
    return generator


@functools.cache
def so_generators(n: int) -> tuple[np.ndarray, ...]:
    return tuple(so_generator(n, i, j) for i, j in itertools.combinations(range(n), 2))


def commutator(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a @ b - b @ a


def generator_coefficient(matrix: np.ndarray, basis_element: np.ndarray) -> float:
    """c with matrix = c * basis_element (checked)."""
    coefficient = np.vdot(basis_element, matrix) / np.vdot(basis_element, basis_element)
    assert np.allclose(matrix, coefficient * basis_element)
    assert abs(coefficient.imag) < 1e-12
    return float(coefficient.real)


@functools.cache
def lie_rank(n: int) -> int:
    """Rank of so(n): the dimension of the centralizer of a generic element (nullity of ad_X)."""
    basis = so_generators(n)
    generic = sum(np.random.default_rng(1).normal() * g for g in basis)
    ad = np.array([commutator(generic, g).ravel() for g in basis]).T
    return len(basis) - int(np.linalg.matrix_rank(ad, tol=1e-9))


def d4_diagram_automorphisms() -> int:
    """Permutations of the simple roots of D4 that preserve its Cartan matrix."""
    simple_roots = np.array([[1, -1, 0, 0], [0, 1, -1, 0], [0, 0, 1, -1], [0, 0, 1, 1]], dtype=float)
    cartan = 2 * simple_roots @ simple_roots.T / (simple_roots**2).sum(axis=1)[None, :]
    return sum(
        1
        for permutation in itertools.permutations(range(4))
        if np.array_equal(cartan[np.ix_(permutation, permutation)], cartan)
    )


def expm(matrix: np.ndarray) -> np.ndarray:
    """Matrix exponential by scaling and squaring of a Taylor series (no scipy)."""
    squarings = max(0, math.ceil(math.log2(max(np.linalg.norm(matrix), 1.0))) + 4)
    scaled = matrix / 2**squarings
    result = term = np.eye(len(matrix), dtype=matrix.dtype)
    for k in range(1, 30):
        term = term @ scaled / k
        result = result + term
    for _ in range(squarings):
        result = result @ result
    return result


def random_so8_rotation() -> np.ndarray:
    angles = np.random.default_rng(7).normal(size=28)
    rotation = expm(sum(a * g for a, g in zip(angles, so_generators(8), strict=True)))
    assert np.allclose(rotation.T @ rotation, np.eye(8))
    return rotation


def rotation_period(generator: np.ndarray) -> float:
    """Smallest θ > 0 on a fine grid with exp(θ L) = I, refined to the exact candidate 2π."""
    grid = np.linspace(0.1, 7.0, 691)
    first = next(theta for theta in grid if np.allclose(expm(theta * generator), np.eye(8), atol=1e-2))
    assert np.allclose(expm(2 * math.pi * generator), np.eye(8)) and abs(first - 2 * math.pi) < 0.02
    return 2 * math.pi


def clifford_dimension(n: int) -> int:
    """Size of n Hermitian matrices with {γ_a, γ_b} = 2δ_ab built from Pauli tensor products."""
    half = n // 2
    gammas = []
    for k in range(half):
        for sigma in (PAULI["x"], PAULI["y"]):
            factors = [PAULI["z"]] * k + [sigma] + [np.eye(2)] * (half - k - 1)
            gammas.append(functools.reduce(np.kron, factors))
    for a, b in itertools.product(range(n), repeat=2):
        anticommutator = gammas[a] @ gammas[b] + gammas[b] @ gammas[a]
        assert np.allclose(anticommutator, 2 * (a == b) * np.eye(len(gammas[0])))
    return len(gammas[0])


def spin_matrices(j: Fraction | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S_x, S_y, S_z (units of ħ) for spin j, from the ladder operators."""
    m = np.array([float(j) - k for k in range(int(2 * j) + 1)])
    plus = np.diag(np.sqrt(float(j) * (float(j) + 1) - m[1:] * (m[1:] + 1)), 1)
    s_x, s_y = (plus + plus.T) / 2, (plus - plus.T) / 2j
    s_z = np.diag(m)
    assert np.allclose(commutator(s_x, s_y), 1j * s_z)
    return s_x, s_y, s_z


def _coupled_total_spin(j1: Fraction | int, j2: Fraction | int) -> tuple[np.ndarray, np.ndarray]:
    first, second = spin_matrices(j1), spin_matrices(j2)
    d1, d2 = len(first[0]), len(second[0])
    total = [np.kron(a, np.eye(d2)) + np.kron(np.eye(d1), b) for a, b in zip(first, second, strict=True)]
    return np.linalg.eigh(sum(t @ t for t in total))


def total_spin_multiplicity(j1: Fraction | int, j2: Fraction | int, total: int) -> int:
    values, _ = _coupled_total_spin(j1, j2)
    return int(np.isclose(values, total * (total + 1)).sum())


def singlet_overlap_squared(j1: int, j2: int) -> float:
    """|<j1, j1; j2, -j2 | 0, 0>|^2 from the J = 0 eigenvector of J^2."""
    values, vectors = _coupled_total_spin(j1, j2)
    singlet = vectors[:, np.isclose(values, 0.0)][:, 0]
    return float(abs(singlet[2 * j2]) ** 2)  # basis index of (m1 = j1, m2 = -j2)


def rotation_phase(angle: float) -> float:
    """exp(-i angle σ_n / 2) for a random axis n must be a multiple of I; return the (real) factor."""
    axis = np.random.default_rng(3).normal(size=3)
    axis /= np.linalg.norm(axis)
    rotation = expm(-0.5j * angle * sum(a * PAULI[k] for a, k in zip(axis, "xyz", strict=True)))
    assert np.allclose(rotation, rotation[0, 0] * np.eye(2)) and abs(rotation[0, 0].imag) < 1e-9
    return float(rotation[0, 0].real)


def expectation(operator: np.ndarray, state: np.ndarray) -> float:
    return float(np.vdot(state, operator @ state).real)


@functools.cache
def oscillator_levels() -> np.ndarray:
    """Lowest levels of H = p²/2 + x²/2 (units ħω) by finite differences on [-10, 10]."""
    x, step = np.linspace(-10, 10, 2001, retstep=True)
    kinetic = (
        np.diag(np.full(len(x), 1.0)) - 0.5 * np.eye(len(x), k=1) - 0.5 * np.eye(len(x), k=-1)
    ) / step**2
    return np.round(np.linalg.eigvalsh(kinetic + np.diag(x**2 / 2))[:5], 3)  # good to about 1e-4


@functools.cache
def box_levels() -> np.ndarray:
    """Lowest levels of a particle in a box by finite differences (arbitrary units)."""
    size = 1000
    kinetic = 2 * np.eye(size) - np.eye(size, k=1) - np.eye(size, k=-1)
    return np.linalg.eigvalsh(kinetic)[:3]


def gaussian_uncertainty_product() -> float:
    """Δx Δp (units ħ) of a Gaussian wave packet, numerically: the state that attains the minimum."""
    x, step = np.linspace(-12, 12, 4001, retstep=True)
    psi = np.exp(-(x**2) / 2)
    psi /= np.sqrt((abs(psi) ** 2).sum() * step)
    spread_x = math.sqrt((x**2 * psi**2).sum() * step)
    spread_p = math.sqrt((np.gradient(psi, step) ** 2).sum() * step)
    return round(spread_x * spread_p, 4)  # finite differences: good to about 1e-5


CODATA = {  # SI, CODATA 2018
    "h": 6.62607015e-34,
    "hbar": 6.62607015e-34 / (2 * math.pi),
    "c": 299792458.0,
    "e": 1.602176634e-19,
    "m_e": 9.1093837015e-31,
    "m_p": 1.67262192369e-27,
    "epsilon_0": 8.8541878128e-12,
}


def fine_structure_constant() -> float:
    k = CODATA
    return k["e"] ** 2 / (4 * math.pi * k["epsilon_0"] * k["hbar"] * k["c"])


def hydrogen_level_ev(n: int) -> float:
    """Bohr level with the reduced mass, in eV."""
    reduced = CODATA["m_e"] * CODATA["m_p"] / (CODATA["m_e"] + CODATA["m_p"])
    return -reduced * (fine_structure_constant() * CODATA["c"]) ** 2 / (2 * n**2) / CODATA["e"]


def lyman_alpha_nm() -> float:
    energy = (hydrogen_level_ev(2) - hydrogen_level_ev(1)) * CODATA["e"]
    return CODATA["h"] * CODATA["c"] / energy * 1e9


def bohr_radius_pm() -> float:
    return CODATA["hbar"] / (CODATA["m_e"] * CODATA["c"] * fine_structure_constant()) * 1e12


def electron_wavelength_nm(energy_ev: float) -> float:
    return CODATA["h"] / math.sqrt(2 * CODATA["m_e"] * energy_ev * CODATA["e"]) * 1e9


CHECK_NAMESPACE = {
    name: value for name, value in globals().items() if callable(value) or name in ("PAULI", "CODATA")
} | {
    "math": math,
    "np": np,
    "Fraction": Fraction,
    "comb": comb,
    "factorial": factorial,
    "itertools": itertools,
}


# ---------------------------------------------------------------- the files


# the answer-line suites, and the suites whose answers are data (JSON, tool calls): at least this many items
MIN_ITEMS = {"math": 40, "quantum": 40, "structured": 25, "tools": 25}


def test_every_suite_is_there_with_enough_items() -> None:
    assert set(MIN_ITEMS) <= set(SUITES)
    for suite in SUITES.values():
        assert len(suite.items) >= MIN_ITEMS.get(suite.name, 25), suite.name
        assert len({item.id for item in suite.items}) == len(suite.items)
        if suite.name in ("math", "quantum"):
            assert "Answer: <value>" in suite.instruction


def test_the_math_suite_covers_the_hypercube_and_ball_questions() -> None:
    math_suite = SUITES["math"]
    assert math_suite.item("hyper-unit-4-ball-volume").answer == "pi^2/2"
    assert math_suite.item("hyper-section-edge").answer == "sqrt(2)"
    topics = {item.topic for item in math_suite.items}
    assert {"arithmetic", "algebra", "word-problem", "geometry", "higher-dimensions"} <= topics


def test_the_quantum_suite_has_rubric_and_so8_items() -> None:
    quantum = SUITES["quantum"]
    graders = [item.grader for item in quantum.items]
    assert graders.count("rubric") >= 10 and graders.count("numeric") >= 25
    assert quantum.item("so8-dimension").answer == "28"
    assert sum(item.id.startswith("so8") for item in quantum.items) >= 10


@pytest.mark.parametrize(("suite", "item"), NUMERIC_ITEMS)
def test_every_numeric_reference_is_recomputed_by_its_check(suite: object, item: Item) -> None:
    assert item.check, f"{item.id} has no check expression"
    computed = complex(eval(item.check, dict(CHECK_NAMESPACE)))  # our own data file, not model output
    assert abs(computed.imag) < 1e-12
    reference = reference_value(item)
    stated = item.rel_tolerance is not None or item.tolerance is not None  # measured constants, rounded
    close = (
        within_tolerance(computed.real, reference, item)
        if stated
        else (math.isclose(computed.real, reference, rel_tol=1e-6, abs_tol=1e-9))
    )
    assert close, f"{item.id}: check gives {computed.real!r}, reference {item.answer} = {reference!r}"


def test_monte_carlo_agrees_with_the_ball_and_section_formulas() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(400_000, 4))
    inside_4_ball = (np.einsum("ij,ij->i", points, points) <= 1).mean() * 2**4
    assert inside_4_ball == pytest.approx(math.pi**2 / 2, rel=0.01)
    # section of [0,1]^4 at x1+..+x4 = 2: fraction of the cube in a thin slab, divided by its thickness
    cube = rng.uniform(0, 1, size=(400_000, 4))
    half_width = 0.02
    in_slab = (abs(cube.sum(axis=1) - 2) < half_width).mean()
    assert in_slab / (2 * half_width / 2.0) == pytest.approx(4 / 3, rel=0.03)


def test_so8_generators_are_antisymmetric_and_obey_the_stated_commutation_relations() -> None:
    n = 8

    def generator(i: int, j: int) -> np.ndarray:
        return so_generator(n, i, j) if i != j else np.zeros((n, n))

    delta = np.eye(n)
    for g in so_generators(n):
        assert np.array_equal(g.T, -g)
    for i, j, k, l in itertools.product(range(4), repeat=4):  # noqa: E741 - the physicists' index names
        expected = (
            delta[j, k] * generator(i, l)
            - delta[i, k] * generator(j, l)
            - delta[j, l] * generator(i, k)
            + delta[i, l] * generator(j, k)
        )
        assert np.allclose(commutator(generator(i, j), generator(k, l)), expected)
    rotation = random_so8_rotation()
    assert np.linalg.det(rotation) == pytest.approx(1.0)


# ---------------------------------------------------------------- honest grading


@pytest.mark.parametrize(("suite", "item"), ALL_ITEMS)
def test_the_reference_response_scores_one(suite: object, item: Item) -> None:
    result = grade(item, reference_response(item))
    assert (result.score_strict, result.score_flexible, result.passed) == (1.0, 1.0, True), result.reason


@pytest.mark.parametrize(("suite", "item"), ALL_ITEMS)
def test_the_prompt_echoed_back_and_an_empty_response_score_zero(suite, item: Item) -> None:
    for response in (item.prompt, suite.format_prompt(item), "", "   \n"):
        result = grade(item, response)
        assert (result.score_strict, result.score_flexible, result.passed) == (0.0, 0.0, False), (
            f"{response[:60]!r}: {result.reason}"
        )
    if item.rubric is not None:  # no required concept may be given away by the prompt itself
        for pattern in itertools.chain.from_iterable(item.rubric.required):
            assert not re.search(pattern, suite.format_prompt(item), re.IGNORECASE), pattern


@pytest.mark.parametrize(("suite", "item"), NUMERIC_ITEMS)
def test_the_right_number_without_an_answer_line_is_flexible_only(suite: object, item: Item) -> None:
    result = grade(item, f"Working through it step by step, I find that the result is {item.answer}.")
    assert (result.score_strict, result.score_flexible, result.passed) == (0.0, 1.0, False), result.reason


def _word_soup(rng: random.Random, vocabulary: list[str], length: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(length))


def _garbage_responses(suite, item: Item, seed: int) -> list[str]:
    rng = random.Random(seed)
    prompt_words = suite.format_prompt(item).split()
    vocabulary = prompt_words + [str(n) for n in range(100)] + ["the", "of", "is", "=", "+", "\n", "Answer"]
    return [
        _word_soup(rng, vocabulary, 80),
        rng.randbytes(300).decode("latin-1"),
        " ".join([item.prompt] * 3),
        " ".join(rng.sample(prompt_words, len(prompt_words))),  # the prompt, shuffled
    ]


@pytest.mark.parametrize("suite_name", sorted(SUITES))
def test_garbage_scores_about_zero_across_the_suite(suite_name: str) -> None:
    suite = SUITES[suite_name]
    results = [
        grade(item, garbage)
        for seed in range(5)
        for item in suite.items
        for garbage in _garbage_responses(suite, item, seed)
    ]
    strict, flexible = accuracy(results)
    assert strict < 0.01, f"garbage scores {strict:.3f} strict on {suite_name}"  # partial rubric credit only
    assert flexible < 0.03, f"garbage scores {flexible:.3f} flexible on {suite_name}"
    assert sum(result.passed for result in results) == 0


# ---------------------------------------------------------------- bad files


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD_HEADER = "suite: t\ndescription: d\ninstruction: 'Answer: <value>'\nitems:\n"


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ("  - {id: a1, prompt: p, grader: numeric, answer: banana, tags: {topic: t, difficulty: easy}}",
         "not a number or closed form"),
        ("  - {id: a1, prompt: p, grader: nope, answer: '1', tags: {topic: t, difficulty: easy}}",
         "unknown grader 'nope'"),
        ("  - {id: a1, prompt: p, grader: numeric, answer: '1', tags: {topic: t, difficulty: trivial}}",
         "tags.difficulty"),
        ("  - {id: a1, prompt: p, grader: numeric, answer: '1', tolerance: -1,"
         " tags: {topic: t, difficulty: easy}}",
         "'tolerance' must be a number >= 0"),
        ("  - {id: a1, prompt: p, grader: rubric, answer: x, tags: {topic: t, difficulty: easy},"
         " rubric: {required: [['(unclosed']]}}",
         "bad regex '(unclosed'"),
        ("  - {id: a1, prompt: p, grader: rubric, answer: x, tags: {topic: t, difficulty: easy}}",
         "needs rubric.required"),
        ("  - {id: a1, prompt: p, grader: numeric, answr: '1', tags: {topic: t, difficulty: easy}}",
         "unknown key 'answr'"),
        ("  - {id: a1, prompt: p, grader: numeric, answer: '1', tags: {topic: t, difficulty: easy}}\n"
         "  - {id: a1, prompt: q, grader: numeric, answer: '2', tags: {topic: t, difficulty: easy}}",
         "duplicate id"),
    ],
)  # fmt: skip
def test_a_bad_item_is_reported_with_file_item_and_problem(tmp_path: Path, items: str, problem: str) -> None:
    path = _write(tmp_path, GOOD_HEADER + items + "\n")
    with pytest.raises(SuiteDataError) as raised:
        load_suite(path)
    message = str(raised.value)
    assert str(path) in message and "item 'a1'" in message and problem in message, message


def test_every_problem_of_a_file_is_listed_at_once(tmp_path: Path) -> None:
    items = (
        "  - {id: a1, prompt: p, grader: numeric, answer: zz, tags: {topic: t, difficulty: easy}}\n"
        "  - {id: b2, prompt: '', grader: numeric, answer: '1', tags: {topic: t, difficulty: easy}}\n"
    )
    with pytest.raises(SuiteDataError) as raised:
        load_suite(_write(tmp_path, GOOD_HEADER + items))
    assert "2 problem(s)" in str(raised.value) and "item 'b2'" in str(raised.value)


def test_broken_yaml_a_missing_file_and_a_bad_header_are_suite_data_errors(tmp_path: Path) -> None:
    with pytest.raises(SuiteDataError, match="not valid YAML"):
        load_suite(_write(tmp_path, "suite: [unclosed\n"))
    with pytest.raises(SuiteDataError, match="suite file not found") as raised:
        load_suite("no-such-suite")
    assert "math" in raised.value.hint
    with pytest.raises(SuiteDataError, match="threshold"):
        load_suite(_write(tmp_path, GOOD_HEADER.replace("items:", "threshold: 2\nitems: []")))
