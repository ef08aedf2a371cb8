"""nbgrader configuration for a course built from minimf's lessons.

Copy this file into the course directory (the folder that holds ``source/``); see lessons/README.md.
"""
c = get_config()  # noqa: F821 (provided by nbgrader when it reads this file)

c.CourseDirectory.course_id = "minimf"

# The lessons raise their own stub after each solution region, naming the task
# (raise NotImplementedError("Task 2.1: dense backward")), so the region becomes only a comment.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE"}
