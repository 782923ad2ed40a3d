import torch

from genrecal.distill.losses import head_ce_kl, uld_distance
from genrecal.distill.objective import pack
from genrecal.distill.recalibrator import Recalibrator
from genrecal.distill.models import load_vlm


def _recal(zoo_dir, teacher="llava", student="qwen2_vl", init="student"):
    t = load_vlm(zoo_dir(teacher), "teacher")
    s = load_vlm(zoo_dir(student), "student")
    return Recalibrator.from_models(t.model, s.model, s.family.name, depth=2, init=init).eval(), t, s


def test_recalibrator_shapes_and_init(zoo_dir):
    recal, t, s = _recal(zoo_dir)
    d_s = s.model.config.get_text_config().hidden_size
    d_l = t.model.config.get_text_config().hidden_size
    assert recal.proj_pre.weight.shape == (d_s, d_l) and recal.proj_post.weight.shape == (d_l, d_s)
    # initialised from the student's last two decoder layers and the teacher's final norm
    s_layers = s.family.text_model(s.model).layers
    for mine, theirs in zip(recal.layers, s_layers[-2:]):
        for (k, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(a, b), k
    assert torch.equal(recal.norm.weight, t.family.text_model(t.model).norm.weight)
    out = recal(torch.randn(2, 7, d_s), torch.ones(2, 7, dtype=torch.long))
    assert out.shape == (2, 7, d_l)


def test_padding_never_attends(zoo_dir):
    """A sample's Recalibrator output is the same alone and packed beside a longer sample."""
    recal, t, s = _recal(zoo_dir, init="random")
    d_s = s.model.config.get_text_config().hidden_size
    a, b = torch.randn(5, d_s), torch.randn(9, d_s)
    x, mask = pack([[a], [b]])
    assert mask.tolist()[0] == [1] * 5 + [0] * 4
    with torch.no_grad():
        both = recal(x, mask)
        alone = recal(a.unsqueeze(0), torch.ones(1, 5, dtype=torch.long))
    torch.testing.assert_close(both[0, :5], alone[0], atol=1e-5, rtol=1e-5)


def test_attention_mass_is_recorded(zoo_dir):
    recal, t, s = _recal(zoo_dir)
    d_s = s.model.config.get_text_config().hidden_size
    recal(torch.randn(1, 6, d_s), torch.ones(1, 6, dtype=torch.long), keep_attention=True)
    att = recal.last_attention
    assert att is not None and att.shape[-2:] == (6, 6)
    torch.testing.assert_close(att.sum(-1), torch.ones_like(att.sum(-1)))


def test_recalibrator_save_load_roundtrip(zoo_dir, tmp_path):
    recal, t, s = _recal(zoo_dir)
    recal.save(tmp_path / "r")
    again = Recalibrator.load(tmp_path / "r").eval()
    x = torch.randn(1, 4, s.model.config.get_text_config().hidden_size)
    m = torch.ones(1, 4, dtype=torch.long)
    torch.testing.assert_close(recal(x, m), again(x, m))


def test_chunked_head_equals_unchunked():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    feats = torch.randn(13, 16, requires_grad=True)
    ref = torch.randn(13, 16)
    tgt = torch.randint(0, 50, (13,))
    big = head_ce_kl(head, feats, tgt, ref, temperature=2.0, chunk=1000)
    (big["ce"] + big["kl"]).backward()
    g_big = feats.grad.clone()
    feats.grad = None
    small = head_ce_kl(head, feats, tgt, ref, temperature=2.0, chunk=4)
    (small["ce"] + small["kl"]).backward()
    torch.testing.assert_close(big["ce"], small["ce"])
    torch.testing.assert_close(big["kl"], small["kl"])
    torch.testing.assert_close(g_big, feats.grad)
    # against the textbook formulas
    logits, ref_logits = head(feats), head(ref)
    ce = torch.nn.functional.cross_entropy(logits, tgt)
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits / 2, -1), torch.log_softmax(ref_logits / 2, -1),
                                    log_target=True, reduction="batchmean") * 4
    torch.testing.assert_close(small["ce"], ce)
    torch.testing.assert_close(small["kl"], kl)


def test_uld_distance_pads_and_sorts():
    s = torch.tensor([[0.1, 0.9]])
    t = torch.tensor([[0.2, 0.7, 0.1]])
    # sorted: s=[0.9,0.1,0], t=[0.7,0.2,0.1] -> |0.2|+|0.1|+|0.1| = 0.4
    torch.testing.assert_close(uld_distance(s, t), torch.tensor(0.4))
