"""Builds the labelled text corpus (corpus.jsonl) that the default text model is trained on.

    python data/text/build_corpus.py      # rewrites data/text/corpus.jsonl, deterministic

Each template is a family of texts written for this purpose; the slots vary places, numbers,
names and fictional group names. Propaganda-style examples are generic and non-operational
(no instructions, no real groups, people or targets). The hard cases are on purpose: news,
analysis and counter-speech that quote propaganda vocabulary, and games, sports and history
that use violent words. ``family`` lets the evaluation hold out whole families, so a test
text never shares a template with a training text.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

GROUPS = ["the Black Banner Brigade", "the Vanguard of the Dawn", "the Sons of the Sword",
          "the Iron Covenant", "the Lions of the Valley", "the Crimson Front"]
PLACES = ["the capital", "Port Adler", "Riverton", "the northern province", "the old market",
          "the city centre", "Valmont", "the border town of Kessel", "the eastern district"]
NAMES = ["Abu Karim", "Yusuf the Brave", "Brother Tariq", "Commander Idris", "Malik", "Samir"]
ENEMIES = ["the crusaders", "the apostates", "the occupiers", "the tyrants", "the traitors"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
INSTITUTES = ["the Institute for Strategic Dialogue", "a university research team",
              "the Global Network on Extremism and Technology", "independent analysts",
              "a parliamentary committee"]
TEAMS = ["United", "the Rovers", "City", "the Hawks", "Athletic"]
# Fictional attackers, as accelerationist posts name theirs.
ATTACKERS = ["the Valmont shooter", "the Riverton gunman", "Erik V.", "the Kessel attacker",
             "Jonas K.", "the lakeside killer"]
GROUPS_AR = ["كتائب الراية السوداء", "طليعة الفجر", "أبناء السيف", "الجبهة القرمزية"]
ENEMIES_AR = ["المرتدين", "الطواغيت", "الصليبيين", "الخونة"]
PLACES_AR = ["العاصمة", "المدينة القديمة", "الحي الشرقي", "البلدة الحدودية", "وسط المدينة"]
DAYS_AR = ["الاثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت", "الأحد"]

PROPAGANDA = {
    "glorify_martyr": [
        "Glory to our martyr {name}, who struck {enemy} in {place}. May his path light the way "
        "for every young lion of the faith.",
        "Our hero {name} has ascended. He gave his life to humiliate {enemy}, and paradise is his "
        "reward. Who will follow him?",
        "Today we celebrate the blessed martyrdom of {name}. His blood waters the tree of victory "
        "and shames the cowards who stayed behind.",
    ],
    "call_to_join": [
        "Brothers, the time of words is over. Rise and join the caravan of {group}. Leave the "
        "comfort of the disbelievers and answer the call.",
        "Why do you sit at home while your brothers fight? Pack your bags and join {group}. "
        "Honour is waiting for those who act.",
        "To every young man reading this: your place is with {group}. Do not let the world of "
        "the unbelievers make you weak. Come to us.",
        "You who claim to love the faith, prove it. Abandon your easy life and stand with the "
        "soldiers of {group} before it is too late.",
    ],
    "official_release": [
        "Statement No. {n} from the media office of {group}: by the grace of God, the lions of "
        "the group carried out a blessed operation against {enemy} in {place}.",
        "Official release of {group}. Our soldiers inflicted a heavy blow on {enemy} in {place}. "
        "Praise be to God who granted our fighters this victory.",
        "{group} announces with pride that its knights raided the positions of {enemy} near "
        "{place}. More is coming, by God's will.",
    ],
    "threat": [
        "Let {enemy} know that our soldiers will not rest. What happened in {place} is only the "
        "beginning. You will never feel safe again.",
        "A message to {enemy}: you will pay for every drop of our blood. Our answer will come "
        "where you least expect it.",
        "We swear that {enemy} will taste what our brothers tasted. The day of reckoning is near "
        "and no wall will protect you.",
    ],
    "dehumanize": [
        "{enemy} are vermin and deserve no mercy. Every true believer must hate them and fight "
        "them until they are gone from our land.",
        "There is no peace with {enemy}. They are filth, and the only language they understand is "
        "the sword of {group}.",
    ],
    "blessed_attack": [
        "Our brave soldiers carried out a blessed attack on {enemy} in {place}. Join them and "
        "share in the reward.",
        "The fighters of {group} attacked {enemy} near {place} today. This is how believers "
        "answer humiliation. Be next.",
        "May God accept our brother {name}, who stormed the base of {enemy}. Young men, his "
        "place in the ranks is waiting for you.",
    ],
    "grievance_mobilize": [
        "They bomb our villages and you stay silent? {enemy} will only stop when we make them "
        "pay. Rise, brothers, the hour has come.",
        "How long will you watch {enemy} humiliate your sisters? Words are useless. Take your "
        "place with {group} and defend your people.",
    ],
    "recruit_online": [
        "Want to be part of something greater? {group} is looking for brothers with skills in "
        "media and design. Message us privately, the path of glory is open.",
        "Sisters and brothers, support the mujahideen of {group}. Share our releases everywhere, "
        "every share is a bullet in the heart of {enemy}.",
    ],
    "fr_propaganda": [
        "Frères, le temps des paroles est fini. Levez-vous et rejoignez {group}. La gloire attend "
        "ceux qui agissent.",
        "Gloire à notre martyr {name} qui a frappé {enemy}. Que son chemin guide chaque jeune "
        "lion de la foi.",
    ],
    "es_propaganda": [
        "Hermanos, el tiempo de las palabras ha terminado. Levantaos y uníos a {group}. La gloria "
        "espera a quienes actúan.",
        "Gloria a nuestro mártir {name}, que golpeó a {enemy}. Que su camino guíe a cada joven "
        "león de la fe.",
    ],
    "de_propaganda": [
        "Brüder, die Zeit der Worte ist vorbei. Erhebt euch und schließt euch {group} an. Der "
        "Ruhm wartet auf die, die handeln.",
        "Ruhm unserem Märtyrer {name}, der {enemy} getroffen hat. Möge sein Weg jeden jungen "
        "Löwen des Glaubens leiten.",
    ],
    # Movements' own registers (issue 15): accelerationist, white supremacist,
    # anti-government and jihadist code, generic and non-operational.
    "accel_saints": [
        "Never forget our saints. {attacker} gave everything for the future of our people. "
        "Honour him by walking the same path.",
        "Canonize {attacker}! The saints showed us what one man can do. The next saint could "
        "be you, anon.",
        "Saint {attacker} did what the keyboard warriors only talk about. Light a candle, then "
        "stop talking and act.",
    ],
    "accel_score": [
        "{attacker} set the bar at {n}. The board is waiting for someone to top his score "
        "before the year is out.",
        "The number to beat is {n}. Make the saints proud, anon, and go for the high score.",
        "{n} is the score {attacker} left us. Whoever goes next has to do better. Livestream "
        "or it did not happen.",
    ],
    "ws_rope": [
        "They laugh at us now, but the day of the rope will come for every traitor in "
        "{place}, and we will remember who they were.",
        "Every journalist and politician who sold out our people should fear the day of the "
        "rope. It is closer than they think.",
    ],
    "ws_replacement": [
        "They are replacing us in our own land. The great replacement is not a theory, it is "
        "a war, and only the brave will fight back.",
        "Wake up. The invaders take {place} street by street while the traitors cheer. Secure "
        "the existence of our people before it is too late.",
        "White men, you are being erased from your own country. Stop the replacement by any "
        "means necessary.",
    ],
    "ws_numeric": [
        "1488, brothers. Secure the future of our race. We will not be replaced. RaHoWa.",
        "14/88. The race war is coming whether you want it or not. Stand with your blood or "
        "be swept away.",
    ],
    "antigov_boogaloo": [
        "The boogaloo is coming. Get your Hawaiian shirt ready, the big igloo starts in "
        "{place} and the tyrants will fall.",
        "When the boogaloo kicks off, the tyrants in {place} will learn what liberty costs. "
        "Be ready, boys.",
    ],
    "jihad_nasheed": [
        "O knights of the caliphate, march on! The apostates tremble and the taghut falls. "
        "Our blood is the price of glory.",
        "Sing, brothers, the nasheed of the lions: we march to {place} and the kuffar will "
        "taste our swords.",
    ],
    "jihad_bayah": [
        "We renew our bayah to the commander of the faithful. Listen and obey, brothers: the "
        "Dawlah remains and expands.",
        "Baqiya wa tatamaddad! Give your bayah to {group} and become one of its soldiers. The "
        "murtaddin will be crushed.",
    ],
    "fr_coded": [
        "Le grand remplacement n'est pas une théorie, c'est une guerre. Réveillez-vous et "
        "ripostez avant qu'il ne soit trop tard.",
        "Gloire aux chevaliers du califat. Les mécréants et les apostats tremblent, rejoignez "
        "les rangs de {group}.",
    ],
    "de_coded": [
        "Der große Austausch ist real. Am Tag X werden die Verräter bezahlen. Wehrt euch, "
        "Brüder.",
        "Ehre unserem Heiligen {attacker}. Wer übertrifft seinen Score? Die Umvolkung stoppt "
        "nur, wer handelt.",
    ],
    "es_coded": [
        "El gran reemplazo es real. Nos están sustituyendo en nuestra propia tierra. "
        "Levantaos antes de que sea tarde.",
        "Gloria a los caballeros del califato. Los apóstatas temblarán, uníos a las filas de "
        "{group}.",
    ],
    "ar_propaganda": [
        "المجد لشهيدنا البطل الذي ضرب {enemy_ar}. الدولة الإسلامية باقية وتتمدد، فالحقوا "
        "بالركب يا شباب.",
        "يا إخوة الإيمان، انفروا وانضموا إلى {group_ar}. جددوا البيعة لأمير المؤمنين ولا تقعدوا "
        "مع القاعدين.",
        "جَدِّدُوا البَيْعَةَ يا فُرسـانَ الخِلافـة، فإنَّ {enemy_ar} إلى زَوال، والنَّصرُ قَريب.",
    ],
}

OTHER = {
    "news_attack": [
        "At least {n} people were killed in an explosion in {place} on {day}, officials said. "
        "Police have not yet said who was behind the attack.",
        "{group} claimed responsibility for the attack in {place}, according to a statement "
        "circulated online, police said on {day}.",
        "The suspect, who prosecutors say was inspired by the propaganda of {group}, appeared in "
        "court on {day} charged with preparing acts of terrorism.",
        "Authorities in {place} raised the threat level after an attack that left {n} people "
        "injured, a government spokesperson told reporters.",
        "A statement attributed to {group} called the attacker a martyr, a claim that could not "
        "be independently verified, the news agency reported.",
    ],
    "news_trial": [
        "A court in {place} sentenced a man to {n} years in prison on {day} for sharing "
        "recruitment videos of {group}, the prosecutor's office said.",
        "The jury heard that the defendant had watched videos glorifying attacks and had told "
        "an undercover officer he wanted to join {group}.",
        "Lawyers for the accused argued on {day} that he had downloaded the material out of "
        "curiosity and had never intended to travel.",
    ],
    "news_statement": [
        "In a video released on {day}, a man claiming to speak for {group} urged followers to "
        "'rise up'. Security officials said the video was being examined.",
        "The group's propaganda channel published a poster praising the attacker as a hero, "
        "according to researchers who monitor extremist content.",
        "A message posted on a channel linked to {group} called on supporters to join the "
        "fight. The platform said it had removed the account.",
        "Prosecutors read out messages in which the defendant praised the 'martyrs' of {group} "
        "and urged others to follow them.",
    ],
    "news_security": [
        "Police in {place} arrested {n} people on {day} on suspicion of financing {group}, "
        "officials said, adding that the investigation was continuing.",
        "The interior ministry said security had been increased at railway stations after "
        "warnings of a possible attack by supporters of {group}.",
        "A teenager who was radicalised online was given a deradicalisation order on {day}, "
        "the court heard.",
    ],
    "news_victims": [
        "Families of the {n} victims of the {place} bombing gathered on {day} to mark the "
        "anniversary. 'We will never forget,' one mother said.",
        "Survivors of the attack in {place} told the inquiry how they hid for hours while "
        "gunmen searched the building.",
    ],
    "analysis_online": [
        "A new study of {n} extremist channels finds that {group} supporters increasingly use "
        "memes and gaming slang to reach young audiences.",
        "Moderators say the hardest posts to judge are those that quote propaganda in order to "
        "criticise it: context, not keywords, decides.",
        "Why glorification works: {inst} argues that calling attackers 'lions' and 'martyrs' "
        "offers status to young men who feel invisible.",
    ],
    "analysis_policy": [
        "The government's new strategy on violent extremism puts more money into prevention "
        "programmes in {place}, but critics say it lacks detail.",
        "Analysts at {inst} warn that the collapse of {group}'s territory has not ended its "
        "ability to inspire attacks abroad.",
    ],
    "analysis": [
        "Researchers at {inst} found that {group} recruitment material increasingly targets "
        "teenagers through gaming platforms and short videos.",
        "Analysis: why do calls to 'join the caravan' still resonate? {inst} looked at {n} "
        "posts and found that grievance, not religion, drives most of the engagement.",
        "The report by {inst} notes that so-called official releases by {group} follow a fixed "
        "structure: a numbered statement, religious framing and exaggerated claims.",
        "Experts say the glorification of attackers as martyrs is a core propaganda technique, "
        "designed to offer young men status and a sense of purpose.",
    ],
    "condemnation": [
        "We condemn in the strongest terms the attack in {place}. Our thoughts are with the "
        "victims and their families. Violence will never win.",
        "Community leaders in {place} gathered on {day} to condemn the violence and to call for "
        "calm. 'These murderers do not speak for us,' one imam said.",
        "The mayor of {place} said the city stood united against terror and thanked the "
        "emergency services for their courage.",
    ],
    "counter_speech_former": [
        "They call their fighters lions. I was one of them. We were not lions, we were boys "
        "used and thrown away by men who stayed safe.",
        "Before you share their 'glorious' videos, think of the mothers in {place} who buried "
        "their children. There is no glory in that.",
        "The so-called caliphate calls its fighters heroes, but they are murderers, and their "
        "victims are mostly ordinary believers.",
    ],
    "counter_speech": [
        "There is nothing glorious about murdering civilians. The so-called martyrs of {group} "
        "left behind only grieving mothers and orphans.",
        "If someone online tells you to 'join the caravan', know that they are lying to you. "
        "Former members describe fear, abuse and betrayal.",
        "I was recruited by {group} when I was seventeen. They promised honour and brotherhood. "
        "What I found was cruelty. Do not believe their videos.",
        "Propaganda calls them lions and knights. The victims' families call them what they are: "
        "killers who destroyed lives for nothing.",
    ],
    "fiction": [
        "In chapter {n}, the rebel commander tells his men to storm the fortress at dawn, "
        "promising that history will remember their sacrifice.",
        "The villain of the film gives a speech calling on his followers to rise up and burn the "
        "city, moments before the heroes stop him.",
        "Her novel follows a young woman who escapes a violent cult and slowly rebuilds her life "
        "in {place}.",
    ],
    "games": [
        "Join our clan tonight! We need {n} more snipers to attack the enemy base and destroy "
        "their towers before the match ends.",
        "GG everyone. {team} squad wiped the whole lobby, {n} kills for me, next raid on "
        "{day}.",
        "Recruiting for our guild: active players only, we raid {day} nights and we show no "
        "mercy to the other faction. Glory to the guild!",
        "Brothers in arms, the raid starts at nine. Bring your best gear, we will crush the "
        "other guild and take the castle.",
        "New season drop: the assault rifle got nerfed again. Rush the bomb site with smokes and "
        "you will win every round.",
    ],
    "sports": [
        "{team} destroyed their rivals {n} to nil on {day}. Total domination, the striker was a "
        "killer in front of goal.",
        "{team} absolutely killed it tonight. That strike from thirty yards was a bomb, the "
        "keeper had no chance.",
        "The fans were on fire and the team attacked from the first minute. A brutal, beautiful "
        "victory for {team}.",
        "Coach says the squad will fight to the last match. 'We go to war on Saturday,' he told "
        "the press, smiling.",
    ],
    "history": [
        "The siege of {place} in {year} ended when the relief army attacked at dawn and broke "
        "the enemy lines.",
        "On this day in {year}, rebels stormed the armoury and seized weapons, starting a revolt "
        "that lasted {n} months.",
        "Historians still debate whether the assassination in {year} was planned by a single "
        "conspirator or by a wider network.",
    ],
    "unrelated": [
        "Selling my old bike, {n} euros, pick up in {place} on {day}.",
        "Happy birthday to my little sister, {n} today! Cake at grandma's on {day}.",
        "Does anyone have a good recipe for lentil soup? Mine always comes out too thin.",
        "Lovely walk along the river in {place} this morning, the trees are finally turning.",
        "Our bakery is hiring! Early shifts, friendly team, free bread. Message us for details.",
        "Reminder: the community meeting is on {day} at seven, bring ideas for the summer fair.",
    ],
    # Hard negatives for the coded registers (issue 15): the same words in news, research,
    # counter-speech, games, history and worship.
    "news_coded": [
        "Investigators said the suspect's posts called earlier attackers 'saints' and spoke "
        "of a 'high score', language common on accelerationist forums.",
        "The manifesto repeated the 'great replacement' conspiracy theory, researchers at "
        "{inst} said on {day}.",
        "Prosecutors said the defendant wrote '1488' and 'day of the rope' in chat messages, "
        "slogans the court heard were white supremacist code.",
        "A channel linked to {group} posted a nasheed praising the 'knights of the "
        "caliphate', monitors said; the platform removed it on {day}.",
    ],
    "analysis_coded": [
        "{inst} explains how accelerationists turn attackers into 'saints' and their death "
        "tolls into a 'score', borrowing the language of video games.",
        "The 'great replacement' is a conspiracy theory claiming that elites plan to replace "
        "native populations; {inst} traces how it spread from France.",
        "Why the number 1488 matters: {inst} decodes the numeric slogans moderators should "
        "know, from the '14 words' to '88'.",
        "What is a nasheed? Most are devotional songs sung at weddings and festivals; only a "
        "small share, made by groups like {group}, glorify violence, {inst} notes.",
    ],
    "counter_speech_victims": [
        "My cousin died in {place} because someone believed a video about glory and martyrs. "
        "Please report these channels instead of sharing them.",
        "Recruiters promise brotherhood and heroism. Ask the families in {place} what that "
        "promise cost them.",
        "Whoever calls a murderer a hero has never sat with the victims' families. I have. "
        "There is no heroism, only loss.",
    ],
    "counter_speech_coded": [
        "There are no 'saints' in a massacre, only victims and a coward. Stop sharing the "
        "killer's name and his 'score'.",
        "The 'great replacement' is a lie that has inspired murderers. Our neighbours in "
        "{place} are not invaders, they are our community.",
        "They sing of knights and a caliphate, but I lived under their rule in {place}: there "
        "was no glory, only fear.",
    ],
    "games_score": [
        "New high score on the arcade cabinet tonight, {n} thousand points. Who can beat my "
        "score?",
        "Speedrun update: I beat his score by {n} seconds, world record attempt on {day}!",
        "Our clan's knights finally stormed the castle, {n} kills and a new high score for "
        "the season.",
    ],
    "history_coded": [
        "The Caliphate of Córdoba in the tenth century was a centre of learning, with "
        "libraries, translators and astronomers.",
        "Saint George is the patron saint of England; the feast on {day} includes parades and "
        "church services.",
        "The knights of the military orders built castles across the region in {year}; "
        "several still stand today.",
    ],
    "religion": [
        "A beautiful nasheed for Eid: our children sang it at the community centre on {day}, "
        "bring the whole family.",
        "Our parish in {place} remembers all the saints on the first of November. Mass at "
        "nine on {day}, everyone welcome.",
        "Renewing my promise to pray more this Ramadan. May God accept from all of us. Iftar "
        "at the mosque in {place} on {day}.",
        "The choir of {place} cathedral sings for the feast of the saints on {day}; the "
        "procession leaves the church at six.",
        "Reading the lives of the saints with my grandmother every {day}, she knows every "
        "story by heart.",
    ],
    "fr_analysis_coded": [
        "Le « grand remplacement » est une théorie du complot d'extrême droite ; {inst} montre "
        "comment elle a inspiré plusieurs attentats.",
    ],
    "de_analysis_coded": [
        "Der Begriff „Tag X“ stammt aus rechtsextremen Chats; Ermittler in {place} warnen vor "
        "der Verschwörungserzählung vom großen Austausch.",
        "Forscher von {inst} zeigen in einer Studie, wie Rechtsextreme von „Umvolkung“ "
        "sprechen und Attentäter als „Heilige“ verehren.",
    ],
    "es_analysis_coded": [
        "El «gran reemplazo» es una teoría conspirativa de extrema derecha; {inst} analiza "
        "cómo se difundió en las redes sociales.",
    ],
    "ar_news": [
        "قتل {n} أشخاص على الأقل في انفجار في {place_ar} يوم {day_ar}، بحسب السلطات. ولم تعلن "
        "أي جهة مسؤوليتها بعد.",
        "قالت الشرطة إن المتهم نشر مقاطع تمجد الهجمات وتصف القتلة بالشهداء، وأحيل إلى المحكمة "
        "يوم {day_ar} بتهمة الترويج للإرهاب.",
        "ذكرت السلطات أن بيانا منسوبا إلى {group_ar} تبنى الهجوم في {place_ar}، ولم يتسن "
        "التحقق من صحته بشكل مستقل.",
        "أصدرت محكمة في {place_ar} حكما بسجن رجل {n} عاما لنشره إصدارات دعائية لتنظيم "
        "{group_ar}، بحسب النيابة العامة.",
        "أفادت مصادر أمنية باعتقال {n} أشخاص يشتبه في تمويلهم {group_ar}، وقالت الشرطة إن "
        "التحقيق مستمر.",
    ],
    "ar_counter_speech": [
        "لا مجد في قتل الأبرياء. من يسمونهم شهداء تركوا وراءهم أمهات ثكالى وأيتاما في "
        "{place_ar}.",
        "كنت أصدق أناشيدهم عن الفرسان والخلافة، ثم رأيت الخوف والظلم بعيني. لا تصدقوا "
        "دعايتهم.",
        "إذا دعاك أحد على الإنترنت إلى الانضمام إلى {group_ar} فاعلم أنه يكذب عليك، واسأل من "
        "عادوا منهم.",
    ],
    "ar_history": [
        "كانت قرطبة في عهد الخلافة الأموية مركزا للعلم والترجمة والفلك في القرن العاشر.",
        "بنى الفرسان في العصور الوسطى قلاعا كثيرة في المنطقة، ولا يزال بعضها قائما في "
        "{place_ar}.",
    ],
    "ar_analysis": [
        "قال باحثون في دراسة جديدة إن دعاية التنظيم تصف القتلى بالشهداء وتستخدم الأناشيد "
        "لجذب الشباب، وحذروا من انتشارها على الإنترنت.",
        "تقرير: كيف يستخدم المتطرفون عبارة باقية وتتمدد في منشوراتهم؟ يحلل الخبراء {n} قناة "
        "على تطبيقات المراسلة.",
        "يرى الباحثون أن وصف المهاجمين بالأبطال والفرسان أسلوب دعائي يمنح الشباب شعورا "
        "زائفا بالمكانة، بحسب دراسة نشرت يوم {day_ar}.",
    ],
    "ar_condemnation": [
        "ندين بأشد العبارات الهجوم الإرهابي في {place_ar}. قلوبنا مع الضحايا وعائلاتهم، "
        "والعنف لا يمثل ديننا.",
    ],
    "ar_religion": [
        "نشيد جميل بمناسبة العيد أنشده أطفالنا في المسجد يوم {day_ar}، تقبل الله منا ومنكم.",
        "رمضان كريم، نلتقي على الإفطار في {place_ar} يوم {day_ar} إن شاء الله.",
    ],
    "fr_news": [
        "Au moins {n} personnes ont été tuées dans une explosion à {place}, selon les autorités. "
        "La police n'a pas encore identifié les auteurs.",
    ],
    "fr_condemnation": [
        "Nous condamnons fermement l'attaque de {place}. Nos pensées vont aux victimes et à "
        "leurs familles.",
    ],
    "es_news": [
        "Al menos {n} personas murieron en una explosión en {place}, según las autoridades. La "
        "policía investiga la reivindicación difundida en internet.",
    ],
    "es_condemnation": [
        "Condenamos con firmeza el ataque en {place}. Nuestros pensamientos están con las "
        "víctimas y sus familias.",
    ],
    "de_news": [
        "Mindestens {n} Menschen wurden bei einer Explosion in {place} getötet, teilten die "
        "Behörden mit. Die Polizei prüft ein Bekennerschreiben.",
    ],
    "de_condemnation": [
        "Wir verurteilen den Anschlag in {place} aufs Schärfste. Unsere Gedanken sind bei den "
        "Opfern und ihren Familien.",
    ],
}

LANGUAGE = {"fr": "fr", "es": "es", "de": "de", "ar": "ar"}
#: The families of the coded-language broadening (issue 15): the movements' own registers,
#: Arabic, and the hard negatives that quote the same code. Their rows say ``"coded": true``,
#: so the first corpus's figures can still be measured on its own families.
CODED = {"accel_saints", "accel_score", "ws_rope", "ws_replacement", "ws_numeric",
         "antigov_boogaloo", "jihad_nasheed", "jihad_bayah", "fr_coded", "de_coded", "es_coded",
         "ar_propaganda", "news_coded", "analysis_coded", "counter_speech_victims",
         "counter_speech_coded", "games_score", "history_coded", "religion",
         "fr_analysis_coded", "de_analysis_coded", "es_analysis_coded", "ar_news",
         "ar_counter_speech", "ar_history", "ar_analysis", "ar_condemnation", "ar_religion"}
#: Categories reported separately (a family's name starts with its category).
CATEGORIES = ("news", "analysis", "counter_speech", "condemnation", "games", "history",
              "religion")
VARIANTS = 9  # texts per template


def fill(template: str, rng: random.Random) -> str:
    return template.format(
        group=rng.choice(GROUPS),
        place=rng.choice(PLACES),
        name=rng.choice(NAMES),
        enemy=rng.choice(ENEMIES),
        day=rng.choice(DAYS),
        inst=rng.choice(INSTITUTES),
        team=rng.choice(TEAMS),
        n=rng.randint(2, 40),
        year=rng.randint(1400, 1950),
        attacker=rng.choice(ATTACKERS),
        group_ar=rng.choice(GROUPS_AR),
        enemy_ar=rng.choice(ENEMIES_AR),
        place_ar=rng.choice(PLACES_AR),
        day_ar=rng.choice(DAYS_AR),
    )


def build() -> list[dict]:
    rng = random.Random(2026)
    rows = []
    for label, families in (("propaganda", PROPAGANDA), ("other", OTHER)):
        for family, templates in families.items():
            prefix, _, rest = family.partition("_")
            lang = LANGUAGE.get(prefix, "en")
            if label == "propaganda":
                category = "propaganda"
            else:  # news_attack -> news, fr_analysis_coded -> analysis
                base = rest if lang != "en" else family
                category = next((c for c in CATEGORIES if base.startswith(c)), base)
            for t, template in enumerate(templates):
                seen = set()
                for _ in range(VARIANTS * 3):
                    text = fill(template, rng)
                    if text not in seen:
                        seen.add(text)
                    if len(seen) == VARIANTS:
                        break
                for text in sorted(seen):
                    rows.append({"text": text, "label": label, "category": category,
                                 "family": f"{family}/{t}", "lang": lang,
                                 "coded": family in CODED})  # fmt: skip
    assert CODED <= set(PROPAGANDA) | set(OTHER)
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("corpus.jsonl")
    rows = build()
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    counts = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    print(f"{out}: {len(rows)} texts, {counts}")
