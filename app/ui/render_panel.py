"""Render panel: where the animation stage runs ("Render on: this computer / a server"), with the
server's address and token. "Apply" (or Enter in a field) asks for the choice; the window switches
the running session over and remembers it."""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from ..run.renderer import RenderChoice, RenderTarget

TARGETS = (("this computer", RenderTarget.LOCAL), ("a server", RenderTarget.SERVER))


class RenderPanel(QtWidgets.QGroupBox):
    render_requested = QtCore.Signal(object)        # a RenderChoice

    def __init__(self, choice: RenderChoice, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Render", parent)
        self.target = QtWidgets.QComboBox()
        for label, target in TARGETS:
            self.target.addItem(label, target)
        self.address = QtWidgets.QLineEdit()
        self.address.setPlaceholderText("ws://HOST:PORT or wss://HOST:PORT")
        self.token = QtWidgets.QLineEdit()
        self.token.setPlaceholderText("the server's token")
        self.token.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.apply_button = QtWidgets.QPushButton("Apply")
        self.state = QtWidgets.QLabel("")
        self.state.setWordWrap(True)
        form = QtWidgets.QFormLayout(self)
        form.addRow("Render on", self.target)
        form.addRow("Address", self.address)
        form.addRow("Token", self.token)
        form.addRow(self.apply_button)
        form.addRow(self.state)
        self.show_choice(choice)
        self.target.currentIndexChanged.connect(lambda _: self._enable_fields())
        self.apply_button.clicked.connect(self.apply)
        self.address.returnPressed.connect(self.apply)
        self.token.returnPressed.connect(self.apply)

    def choice(self) -> RenderChoice:
        """What the controls show now."""
        return RenderChoice(RenderTarget(self.target.currentData()), self.address.text().strip(),
                            self.token.text().strip())

    def show_choice(self, choice: RenderChoice) -> None:
        """Make the controls show ``choice`` without asking for it."""
        self.target.setCurrentIndex(self.target.findData(choice.target))
        self.address.setText(choice.url)
        self.token.setText(choice.token)
        self._enable_fields()

    def show_state(self, text: str) -> None:
        self.state.setText(text)

    def apply(self) -> None:
        self.render_requested.emit(self.choice())

    def _enable_fields(self) -> None:
        remote = self.target.currentData() == RenderTarget.SERVER
        self.address.setEnabled(remote)
        self.token.setEnabled(remote)
