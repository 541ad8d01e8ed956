from matplotlib.image import imread

from kdlora.analysis.plots import bar_chart, heatmaps, line_chart


def test_helpers_write_decodable_pngs(tmp_path):
    bar_chart(tmp_path / "bars.png", ["a", "b"], {"FFT": [100.0, 120.0], "LoRA": [1.0, None]}, "t", "M", log=True)
    line_chart(tmp_path / "lines.png", [8, 16], {"x LoRA": [1.0, 2.0]}, "t", "rank", "M", log=True,
               styles={"x LoRA": {"linestyle": ":"}})
    heatmaps(tmp_path / "heat.png", [("LoRA", [[0.9, 0.8]], ["a"], ["Rank 8", "Rank 16"]),
                                     ("KD-LoRA", [[0.95, 0.9]], ["a"], ["Rank 8", "Rank 16"])])
    for name, min_width in [("bars.png", 800), ("lines.png", 800), ("heat.png", 1000)]:
        image = imread(tmp_path / name)
        assert image.shape[1] >= min_width and image.shape[2] in (3, 4)
        assert image[..., :3].std() > 0.01  # something was drawn
