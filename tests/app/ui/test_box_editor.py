"""The face box editor: its geometry as plain functions (view fit, what a press grabs, moving and
resizing with the limits), then the widget under simulated mouse drags (pytest-qt, offscreen)."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore
from PySide6.QtTest import QTest

from app.avatar.framing import AvatarBox, AvatarChoice
from app.ui.box_editor import (
    MARGIN_FACTOR,
    MAX_BOX_FACTOR,
    MIN_BOX_SIDE,
    BoxEditor,
    View,
    clamp_box,
    dragged_box,
    fit_view,
    grip_at,
    view_region,
)

IMAGE = (400, 300)            # width, height


def test_view_maps_image_and_widget_pixels_both_ways() -> None:
    view = View(0.5, 10.0, -4.0)
    assert view.to_widget(100, 40) == (60.0, 16.0)
    assert view.to_image(*view.to_widget(123.5, -7.25)) == pytest.approx((123.5, -7.25))


def test_the_view_fits_the_image_with_its_margin_centred() -> None:
    box = AvatarBox(100, 50, 100)
    region = view_region(IMAGE, box)
    m = MARGIN_FACTOR * 400
    assert region == (-m, -m, 400 + m, 300 + m)
    view = fit_view(region, (1000, 500))
    # the taller region fills the height; the width is centred
    x0, y0 = view.to_widget(region[0], region[1])
    x1, y1 = view.to_widget(region[2], region[3])
    assert (y0, y1) == pytest.approx((0, 500))
    assert x0 == pytest.approx(1000 - x1) and x1 - x0 < 1000


def test_the_view_grows_to_hold_a_box_beyond_the_margin() -> None:
    box = AvatarBox(-300, -50, 500)
    x0, y0, x1, y1 = view_region(IMAGE, box)
    assert x0 == -300 and x1 == 400 + MARGIN_FACTOR * 400 and y1 == 450


def test_a_press_grabs_a_corner_the_box_or_nothing() -> None:
    box = AvatarBox(100, 50, 100)
    assert grip_at(box, (102, 48), 5) == "top_left"
    assert grip_at(box, (200, 50), 5) == "top_right"
    assert grip_at(box, (99, 151), 5) == "bottom_left"
    assert grip_at(box, (204, 154), 5) == "bottom_right"
    assert grip_at(box, (150, 100), 5) == "move"
    assert grip_at(box, (20, 20), 5) is None
    tiny = AvatarBox(0, 0, 16)                    # handles overlap: the nearest corner wins
    assert grip_at(tiny, (14, 15), 10) == "bottom_right"


def test_moving_shifts_the_box_and_keeps_its_centre_on_the_image() -> None:
    box = AvatarBox(100, 50, 100)
    assert dragged_box(box, "move", (150, 100), (170, 90), IMAGE) == AvatarBox(120, 40, 100)
    # outside the image is allowed, as long as the centre stays on it
    assert dragged_box(box, "move", (150, 100), (50, 0), IMAGE) == AvatarBox(0, -50, 100)
    far = dragged_box(box, "move", (150, 100), (-500, -500), IMAGE)
    assert far.center == (0, 0) and far.size == 100


def test_resizing_keeps_the_opposite_corner_and_the_square() -> None:
    box = AvatarBox(100, 50, 100)
    # bottom-right dragged out: the top-left stays, the larger distance wins
    assert dragged_box(box, "bottom_right", (200, 150), (260, 230), IMAGE) == AvatarBox(100, 50, 180)
    # top-left dragged in: the bottom-right (200, 150) stays
    assert dragged_box(box, "top_left", (100, 50), (140, 120), IMAGE) == AvatarBox(140, 90, 60)
    # top-right and bottom-left
    assert dragged_box(box, "top_right", (200, 50), (250, 30), IMAGE) == AvatarBox(100, 0, 150)
    assert dragged_box(box, "bottom_left", (100, 150), (90, 155), IMAGE) == AvatarBox(90, 50, 110)


def test_resizing_stops_at_the_limits() -> None:
    box = AvatarBox(100, 50, 100)
    crossed = dragged_box(box, "bottom_right", (200, 150), (0, 0), IMAGE)    # past the fixed corner
    assert crossed == AvatarBox(100, 50, MIN_BOX_SIDE)
    huge = dragged_box(box, "bottom_right", (200, 150), (5000, 5000), IMAGE)
    assert huge.size == MAX_BOX_FACTOR * 400
    assert 0 <= huge.center[0] <= 400 and 0 <= huge.center[1] <= 300
    assert clamp_box(0, 0, 1, IMAGE).size == MIN_BOX_SIDE


# -- the widget ------------------------------------------------------------------------------------
@pytest.fixture()
def editor(qtbot, tmp_path):
    widget = BoxEditor()
    qtbot.addWidget(widget)
    widget.resize(900, 700)
    image = np.full((IMAGE[1], IMAGE[0], 3), 128, np.uint8)
    widget.edit(tmp_path / "toon.png", image, AvatarBox(100, 50, 100), "human", "no face found: place the box")
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def _to_canvas(editor: BoxEditor, x: float, y: float) -> QtCore.QPoint:
    wx, wy = editor.canvas.view().to_widget(x, y)
    return QtCore.QPoint(round(wx), round(wy))


def _drag(canvas, start: QtCore.QPoint, end: QtCore.QPoint) -> None:
    left = QtCore.Qt.MouseButton.LeftButton
    QTest.mousePress(canvas, left, QtCore.Qt.KeyboardModifier.NoModifier, start)
    for t in (0.25, 0.5, 0.75, 1.0):      # a few steps, as a hand would
        QTest.mouseMove(canvas, QtCore.QPoint(round(start.x() + (end.x() - start.x()) * t),
                                              round(start.y() + (end.y() - start.y()) * t)))
    QTest.mouseRelease(canvas, left, QtCore.Qt.KeyboardModifier.NoModifier, end)


def test_dragging_the_box_moves_it_in_image_pixels(editor) -> None:
    canvas = editor.canvas
    scale = canvas.view().scale
    changes = []
    canvas.box_changed.connect(changes.append)
    _drag(canvas, _to_canvas(editor, 150, 100), _to_canvas(editor, 210, 140))
    box = canvas.box
    assert box.size == 100
    assert box.x == pytest.approx(160, abs=1.5 / scale) and box.y == pytest.approx(90, abs=1.5 / scale)
    assert changes and changes[-1] == box
    assert editor.box_label.text() == f"box {round(box.x)},{round(box.y)},100"


def test_dragging_a_corner_resizes_the_box(editor) -> None:
    canvas = editor.canvas
    scale = canvas.view().scale
    _drag(canvas, _to_canvas(editor, 200, 150), _to_canvas(editor, 280, 200))
    assert (canvas.box.x, canvas.box.y) == (100, 50)
    assert canvas.box.size == pytest.approx(180, abs=1.5 / scale)


def test_a_press_beside_the_box_changes_nothing(editor) -> None:
    _drag(editor.canvas, _to_canvas(editor, 20, 280), _to_canvas(editor, 60, 290))
    assert editor.canvas.box == AvatarBox(100, 50, 100)


def test_animate_hands_over_the_box_and_the_kind(editor, qtbot, tmp_path) -> None:
    _drag(editor.canvas, _to_canvas(editor, 150, 100), _to_canvas(editor, 150, 60))
    editor.kind_buttons["animal"].setChecked(True)
    with qtbot.waitSignal(editor.accepted) as accepted:
        qtbot.mouseClick(editor.animate_button, QtCore.Qt.MouseButton.LeftButton)
    choice = accepted.args[0]
    assert isinstance(choice, AvatarChoice) and choice.path == tmp_path / "toon.png" and choice.kind == "animal"
    assert choice.box.size == 100 and choice.box.x == 100 and abs(choice.box.y - 10) <= 1
    with qtbot.waitSignal(editor.cancelled):
        qtbot.mouseClick(editor.cancel_button, QtCore.Qt.MouseButton.LeftButton)
