"""What the lesson and course tests share: reading a notebook and telling its nbgrader cells apart."""


def read_notebook(path):
    import nbformat          # the [test] extra's: the test files skip before calling this without it
    return nbformat.read(str(path), as_version=4)


def nbgrader_of(cell):
    """The cell's nbgrader metadata ({} for a cell nbgrader does not manage)."""
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution(cell):
    return cell.cell_type == "code" and nbgrader_of(cell).get("solution", False)


def is_graded_test(cell):
    return cell.cell_type == "code" and nbgrader_of(cell).get("grade", False) and not is_solution(cell)
