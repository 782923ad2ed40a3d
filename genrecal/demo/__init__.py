"""`genrecal-demo`: a Gradio page comparing the teacher with the distilled student, side by side.

    genrecal-demo                      # after `genrecal quickstart`: its teacher and student
    genrecal-demo --teacher T --student genrecal-out/export/onnx-int8w

Modules: cli.py (flags, model paths), models.py (loading the teacher and any student artifact
through genrecal.runtimes), inputs.py (image and question checks), compare.py (streaming both
answers, metrics, agreement), history.py (session table, CSV), gallery.py (shipped examples),
app.py (the page layout and its handlers).
"""
